"""`--push_to_hub` of the recipes: upload the Hub-ready folder a run ends with, and nothing else of its
output folder (checkpoints, logs and stage folders stay local). transformers' flag names, since the recipes
speak its `TrainingArguments` dialect."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi
from huggingface_hub.errors import HTTPError  # the Hub client's: its network errors are not OSErrors


@dataclass(frozen=True)
class HubUpload:
    repo_id: str
    token: str | None = None  # default: the login's (`hf auth login`) or HF_TOKEN
    private: bool = False


class HubUploadError(OSError):
    """The upload failed after the run finished; the message says the outputs are safe and how to push."""


def hub_upload(parser: argparse.ArgumentParser, args: Any, output_dir: Path) -> HubUpload | None:
    """What the Hub flags of `TrainingArguments` (`args`) ask for; those flags without --push_to_hub are an
    error, not a silent no-op."""
    if not args.push_to_hub:
        given = [flag for flag in ("hub_model_id", "hub_token", "hub_private_repo") if getattr(args, flag)]
        if given:
            parser.error(f"--{given[0]} goes with --push_to_hub")
        return None
    repo_id = args.hub_model_id or output_dir.resolve().name
    return HubUpload(repo_id, args.hub_token, bool(args.hub_private_repo))


def push_folder(folder: Path, upload: HubUpload, message: str) -> str:
    """Create the repository if needed and upload `folder` into it as one commit; returns the repo's URL.
    An upload that fails (no network, offline mode, a refused token) raises `HubUploadError`, which says
    that `folder` is complete and how to upload it later."""
    api = HfApi(token=upload.token)
    try:
        repo = api.create_repo(upload.repo_id, private=upload.private, exist_ok=True, repo_type="model")
        api.upload_folder(repo_id=repo.repo_id, folder_path=folder, commit_message=message, repo_type="model")
    except (OSError, HTTPError) as error:
        private = " --private" if upload.private else ""
        raise HubUploadError(
            f"--push_to_hub: could not upload to {upload.repo_id} ({type(error).__name__}: {error}). The run "
            f"finished and its outputs are safe: {folder} is complete. Upload it when the Hub is reachable "
            f"(after `hf auth login`, or with HF_TOKEN set): hf upload {upload.repo_id} {folder}{private}"
        ) from error
    return str(repo)
