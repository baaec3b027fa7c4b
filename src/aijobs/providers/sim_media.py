"""Real media files for the simulator: images, WAV speech and animated-GIF video.

Everything is deterministic in its inputs, so the same job produces the same bytes. The encoders are
CPU work; callers run them in a thread so the event loop stays free.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import struct
import wave

from PIL import Image, ImageDraw

SAMPLE_RATE_HZ = 16_000
WORD_S = 0.35
GIF_FPS = 8
GIF_MAX_SIDE_PX = 320

_WORD = re.compile(r"\w+", re.UNICODE)


def _seed_bytes(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def _palette(text: str) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    seed = _seed_bytes(text)
    return (seed[0], seed[1], seed[2]), (seed[3], seed[4], seed[5])


def render_image(prompt: str, width: int, height: int, fmt: str) -> bytes:
    """A picture of size ``width``x``height``: a two-colour gradient and shapes seeded by the prompt."""
    start, end = _palette(prompt)
    # Build the gradient at one pixel high and stretch it: cheap even for 4096-px images.
    strip = Image.new("RGB", (256, 1))
    strip.putdata(
        [tuple(s + (e - s) * x // 255 for s, e in zip(start, end, strict=True)) for x in range(256)]
    )
    img = strip.resize((width, height))
    draw = ImageDraw.Draw(img)
    seed = _seed_bytes(prompt + "shapes")
    for i in range(0, 12, 3):
        cx, cy, r = (
            seed[i] * width // 255,
            seed[i + 1] * height // 255,
            8 + seed[i + 2] * min(width, height) // 1024,
        )
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(seed[i + 2], seed[i], seed[i + 1]))
    out = io.BytesIO()
    img.save(out, format={"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[fmt])
    return out.getvalue()


def speech_seconds(text: str, speed: float) -> float:
    """How long the simulated voice takes to say ``text``: a fixed time per word, scaled by speed."""
    words = max(1, len(_WORD.findall(text)))
    return round(words * WORD_S / speed, 3)


def render_pcm(text: str, speed: float) -> bytes:
    """16-bit mono PCM: one tone per word, its pitch from the word, its length from ``speed``."""
    words = _WORD.findall(text) or ["."]
    samples_per_word = int(SAMPLE_RATE_HZ * WORD_S / speed)
    chunks = []
    for word in words:
        freq_hz = 180 + _seed_bytes(word.lower())[0] * 2
        period = max(2, round(SAMPLE_RATE_HZ / freq_hz))
        cycle = struct.pack(
            f"<{period}h", *(int(9000 * math.sin(2 * math.pi * i / period)) for i in range(period))
        )
        reps, rest = divmod(samples_per_word, period)
        chunks.append(cycle * reps + cycle[: rest * 2])
    return b"".join(chunks)


def render_wav(text: str, speed: float) -> bytes:
    """A WAV file of :func:`render_pcm`."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE_HZ)
        wav.writeframes(render_pcm(text, speed))
    return out.getvalue()


def gif_size(width: int, height: int) -> tuple[int, int]:
    """The simulator renders a preview: the asked aspect ratio, longest side at most 320 px."""
    scale = min(1.0, GIF_MAX_SIDE_PX / max(width, height))
    return max(2, int(width * scale)), max(2, int(height * scale))


def render_gif(prompt: str, width: int, height: int, duration_s: int) -> bytes:
    """An animated GIF of ``duration_s`` seconds at 8 fps: a ball crossing a seeded gradient."""
    start, end = _palette(prompt)
    background = Image.new("RGB", (width, height), start)
    ImageDraw.Draw(background).rectangle((0, height // 2, width, height), fill=end)
    frames = []
    count = duration_s * GIF_FPS
    radius = max(2, min(width, height) // 8)
    for i in range(count):
        frame = background.copy()
        x = radius + (width - 2 * radius) * i // max(1, count - 1)
        y = height // 2 + int((height // 3) * math.sin(2 * math.pi * i / GIF_FPS))
        ImageDraw.Draw(frame).ellipse((x - radius, y - radius, x + radius, y + radius), fill=end[::-1])
        frames.append(frame.convert("P", palette=Image.Palette.ADAPTIVE, colors=16))
    out = io.BytesIO()
    frames[0].save(
        out, format="GIF", save_all=True, append_images=frames[1:], duration=1000 // GIF_FPS, loop=0
    )
    return out.getvalue()
