"""Tests never reach a hub, and every test starts from the same torch seed."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


@pytest.fixture
def hub_calls(monkeypatch):
    """The Hub client's repository creation and upload, recorded instead of sent: (method, arguments)."""
    from huggingface_hub import HfApi, RepoUrl

    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", {"repo_id": repo_id, "token": self.token, **kwargs}))
        full_id = repo_id if "/" in repo_id else f"me/{repo_id}"  # a bare name lands in the login's namespace
        return RepoUrl(f"https://huggingface.co/{full_id}")

    def upload_folder(self, **kwargs):
        calls.append(("upload_folder", {"token": self.token, **kwargs}))

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return calls
