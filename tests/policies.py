"""Routing-file text shared by tests: the simulator features every file needs besides the one under test."""

from __future__ import annotations

#: A ``sim`` provider and one feature for each job type but chat, each named by its type's initial.
SIM_NON_CHAT = """
[providers.sim]
kind = "sim"
[features.e]
type = "embed"
route = ["sim:e"]
[features.r]
type = "rerank"
route = ["sim:r"]
[features.i]
type = "image"
route = ["sim:i"]
[features.s]
type = "speech"
route = ["sim:s"]
[features.v]
type = "video"
route = ["sim:v"]
"""


def defaults(chat: str) -> str:
    """A ``[defaults]`` table: ``chat`` as the chat feature, the :data:`SIM_NON_CHAT` ones for the rest."""
    return (
        f'\n[defaults]\nchat = "{chat}"\nembed = "e"\nrerank = "r"\nimage = "i"\nspeech = "s"\nvideo = "v"\n'
    )
