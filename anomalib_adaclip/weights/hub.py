"""Where weights come from: ``ADACLIP_WEIGHTS_DIR``, the Hugging Face cache and hub, and the released checkpoints.

One lookup serves every weight file, the AdaCLIP checkpoints released by the authors and open_clip's CLIP weights
alike: a file of the expected name in the folder named by ``ADACLIP_WEIGHTS_DIR`` first, then the Hugging Face cache,
then a download (skipped at once when the hub cannot be reached). A file found nowhere raises
:class:`WeightsNotFoundError`, whose message lists each way to supply it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import getproxies

import open_clip

logger = logging.getLogger(__name__)

__all__ = [
    "HF_REPO_ID",
    "RELEASED_CHECKPOINTS",
    "WEIGHTS_DIR_ENV",
    "ReleasedCheckpoint",
    "WeightsNotFoundError",
    "clip_weight_filenames",
    "download_clip_weights",
    "download_released_checkpoint",
    "find_in_weights_dir",
    "host_reachable",
    "hub_access",
    "hub_cache_dir",
    "hub_cache_only",
]


HF_REPO_ID = "cubert-gmbh/adaclip"


WEIGHTS_DIR_ENV = "ADACLIP_WEIGHTS_DIR"


class WeightsNotFoundError(FileNotFoundError):
    """Weights that are neither on disk nor downloadable (for example offline with an empty cache)."""


@dataclass(frozen=True)
class ReleasedCheckpoint:
    """A checkpoint released by the AdaCLIP authors.

    Attributes:
        name: Short name used for ``checkpoint=...``.
        filename: File name in the hub repository and in ``ADACLIP_WEIGHTS_DIR``.
        trained_on: Auxiliary data the prompts were trained on.
        use_for: Target data the checkpoint is meant for in the paper's protocol.
    """

    name: str
    filename: str
    trained_on: str
    use_for: str


RELEASED_CHECKPOINTS: dict[str, ReleasedCheckpoint] = {
    checkpoint.name: checkpoint
    for checkpoint in (
        ReleasedCheckpoint(
            "mvtec_colondb",
            "pretrained_mvtec_colondb.pth",
            "MVTec AD + ColonDB (test splits)",
            "every data set except MVTec AD and ColonDB (VisA, MPDD, BTAD, medical, ...)",
        ),
        ReleasedCheckpoint(
            "visa_clinicdb",
            "pretrained_visa_clinicdb.pth",
            "VisA + ClinicDB (test splits)",
            "MVTec AD and ColonDB",
        ),
        ReleasedCheckpoint(
            "all",
            "pretrained_all.pth",
            "every data set of the paper",
            "demos only: it has seen the test data of every benchmark",
        ),
    )
}


def find_in_weights_dir(*filenames: str) -> Path | None:
    """The first of ``filenames`` that exists in the folder named by ``ADACLIP_WEIGHTS_DIR``, or ``None``."""
    folder = os.environ.get(WEIGHTS_DIR_ENV)
    if not folder:
        return None
    for filename in filenames:
        if (Path(folder).expanduser() / filename).is_file():
            return Path(folder).expanduser() / filename
    return None


def hub_cache_dir() -> str:
    """The Hugging Face hub cache folder (``HF_HUB_CACHE``), for messages."""
    try:
        from huggingface_hub.constants import HF_HUB_CACHE  # noqa: PLC0415
    except ImportError:  # pragma: no cover - huggingface_hub comes with open_clip
        return "~/.cache/huggingface/hub"
    return str(HF_HUB_CACHE)


def host_reachable(url: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the host of ``url`` (or to the configured proxy) opens within ``timeout`` s."""
    target = urlparse(url)
    proxy = getproxies().get(target.scheme)
    if proxy:
        target = urlparse(proxy if "://" in proxy else f"http://{proxy}")
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        with socket.create_connection((target.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def hub_cache_only(active: bool = True) -> Iterator[None]:
    """Inside the block (when ``active``), Hugging Face lookups answer from the local cache only: no requests."""
    from huggingface_hub import constants  # noqa: PLC0415

    if not active or constants.HF_HUB_OFFLINE:
        yield
        return
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = False


@contextlib.contextmanager
def hub_access() -> Iterator[None]:
    """Let Hugging Face hub calls inside the block fail at once when the hub is unreachable.

    Without network the hub client retries for about a minute before it gives up; when a quick connection test
    fails, the block runs in the client's offline mode instead, which answers from the cache or fails immediately.
    """
    from huggingface_hub import constants  # noqa: PLC0415

    unreachable = not constants.HF_HUB_OFFLINE and not host_reachable(constants.ENDPOINT)
    if unreachable:
        logger.info("%s is unreachable: looking up Hugging Face files in the local cache only.", constants.ENDPOINT)
    with hub_cache_only(unreachable):
        yield


def download_released_checkpoint(name: str) -> Path:
    """Return the local path of a released checkpoint, downloading it into the Hugging Face cache when missing.

    ``ADACLIP_WEIGHTS_DIR`` is searched first for the checkpoint's file name.

    Args:
        name: ``"mvtec_colondb"``, ``"visa_clinicdb"`` or ``"all"``.

    Raises:
        ValueError: Unknown name.
        WeightsNotFoundError: Not on disk and not downloadable (offline, no cache).
    """
    if name not in RELEASED_CHECKPOINTS:
        msg = f"Unknown released AdaCLIP checkpoint {name!r}; choose one of {sorted(RELEASED_CHECKPOINTS)} or a path."
        raise ValueError(msg)
    filename = RELEASED_CHECKPOINTS[name].filename
    if (local := find_in_weights_dir(filename)) is not None:
        return local
    from huggingface_hub import hf_hub_download  # noqa: PLC0415

    try:
        with hub_access():
            return Path(hf_hub_download(repo_id=HF_REPO_ID, filename=filename))
    except Exception as error:  # the hub raises many types (offline, HTTP, missing file)
        msg = (
            f"The released AdaCLIP checkpoint {name!r} ({filename}) is not available: it is not in the Hugging Face "
            f"cache ({hub_cache_dir()}) and downloading it from https://huggingface.co/{HF_REPO_ID} failed "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}).\n"
            f"Supply it in one of these ways:\n"
            f"  - pass its path: checkpoint='/path/to/{filename}' (--model.checkpoint /path/to/{filename});\n"
            f"  - put {filename} into a folder and set {WEIGHTS_DIR_ENV}=/that/folder;\n"
            f"  - download it once online: huggingface-cli download {HF_REPO_ID} {filename} "
            f"(fills the cache; set HF_HOME or HF_HUB_CACHE to move it)."
        )
        raise WeightsNotFoundError(msg) from error


def clip_weight_filenames(model_name: str, tag: str, pretrained_cfg: Mapping[str, Any]) -> list[str]:
    """File names under which the CLIP weights of ``model_name``/``tag`` are looked for in ``ADACLIP_WEIGHTS_DIR``."""
    names = [f"{model_name}-{tag}{suffix}" for suffix in (".safetensors", ".bin", ".pt", ".pth")]
    if url := pretrained_cfg.get("url"):
        names.append(os.path.basename(url))
    return names


def download_clip_weights(model_name: str, tag: str) -> Path:
    """Local path of an open_clip pretrained tag: ``ADACLIP_WEIGHTS_DIR`` first, then open_clip's download/cache."""
    pretrained_cfg = open_clip.get_pretrained_cfg(model_name, tag)
    if not pretrained_cfg:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        msg = (
            f"open_clip has no pretrained weights {tag!r} for {model_name!r} (known tags: {tags or 'none'}). Pass a "
            f"path to a weights file as backbone_weights, or None for random weights."
        )
        raise ValueError(msg)
    candidates = clip_weight_filenames(model_name, tag, pretrained_cfg)
    if (local := find_in_weights_dir(*candidates)) is not None:
        return local
    source = (
        f"Hugging Face hub repository {pretrained_cfg['hf_hub'].rstrip('/')}"
        if pretrained_cfg.get("hf_hub")
        else pretrained_cfg.get("url", "?")
    )
    try:
        with hub_access():
            path = open_clip.download_pretrained(pretrained_cfg)
    except Exception as error:  # open_clip and the hub raise many types (offline, HTTP, missing file)
        cause = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        msg = (
            f"The {tag!r} weights of backbone {model_name!r} are missing: they are not in the cache "
            f"({hub_cache_dir()}) and downloading them from the {source} failed ({cause}).\n"
            f"Supply them in one of these ways:\n"
            f"  - pass a local file: backbone_weights='/path/to/weights' (--model.backbone_weights ...), an OpenAI "
            f"TorchScript .pt, a .pt/.pth/.bin state dict or a .safetensors file;\n"
            f"  - put the file into a folder and set {WEIGHTS_DIR_ENV}=/that/folder, named one of: "
            f"{', '.join(candidates)};\n"
            f"  - download it once online so it lands in the Hugging Face cache (HF_HOME / HF_HUB_CACHE)."
        )
        raise WeightsNotFoundError(msg) from error
    if not path:
        msg = f"open_clip knows no download location for the {tag!r} weights of {model_name!r}."
        raise WeightsNotFoundError(msg)
    return Path(path)
