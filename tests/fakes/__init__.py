"""Test fakes: provider HTTP APIs that llmock does not cover, served over real HTTP for contract tests."""
