"""Everything delphi does on the Hugging Face hub, in one package.

- `client`: thin, error-translating wrappers over `huggingface_hub` (repos, branches, verified folder
  uploads, downloads).
- `publish`: publishing checkpoints (each on branch `step{N}`, the final one also on `main`): staging,
  retries, verification, and the background uploader a training run uses.
- `push`: `delphi push`, publishing what a run has locally and the hub lacks.
- `repo_run`: one run per repo (publishing another run is refused unless --overwrite replaces it).
- `manifest`: `checkpoints.json` on `main`, the list of every published checkpoint.
- `verify`: what `delphi verify` checks of a published run, from metadata alone.

"Publish" always means the upload; the local rename that completes a checkpoint is `finalize`.
"""
