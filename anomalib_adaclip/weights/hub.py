"""Where weights come from: ``ADACLIP_WEIGHTS_DIR``, the Hugging Face cache and hub, and the released checkpoints.

One lookup serves every weight file, the AdaCLIP checkpoints released by the authors and open_clip's CLIP weights
alike: a file of the expected name in the folder named by ``ADACLIP_WEIGHTS_DIR`` first, then the Hugging Face cache,
then a download (skipped at once when the hub cannot be reached). A file found nowhere raises
:class:`WeightsNotFoundError`, whose message lists each way to supply it.

The released checkpoints come from a third-party mirror, so they are verified: the download is pinned to
:data:`RELEASED_REVISION`, and a released checkpoint used by its name (from the hub, the cache or
``ADACLIP_WEIGHTS_DIR``) must have the sha256 the mirror publishes, else :class:`WeightsIntegrityError` refuses it.
A file given by its path is the user's own and is not checked.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse
from urllib.request import getproxies

import open_clip

logger = logging.getLogger(__name__)

__all__ = [
    "HF_REPO_ID",
    "OFFLINE_ENV",
    "RELEASED_CHECKPOINTS",
    "RELEASED_REVISION",
    "WEIGHTS_DIR_ENV",
    "ReleasedCheckpoint",
    "WeightsIntegrityError",
    "WeightsNotFoundError",
    "clip_weight_filenames",
    "download_clip_weights",
    "download_released_checkpoint",
    "downloads_disabled",
    "file_sha256",
    "find_in_weights_dir",
    "host_reachable",
    "hub_access",
    "hub_cache_dir",
    "hub_cache_only",
    "locate_weights",
]


#: The Hugging Face repository of the released checkpoints.
HF_REPO_ID = "cubert-gmbh/adaclip"

#: The commit of HF_REPO_ID every released checkpoint is downloaded from, the one place that pins it. It is the commit
#: the mirror's publishers pin for these three files in their own AdaCLIP plugin (cubert-hyperspectral/cuvis-ai-adaclip,
#: with the same three sha256 values as RELEASED_SHA256 below); to move it, check the three hashes at the new commit.
RELEASED_REVISION = "16153b4ba74c2fe54a99679fc2e1b1e29993dc3f"


WEIGHTS_DIR_ENV = "ADACLIP_WEIGHTS_DIR"
# Set to 1/true/yes/on: the commands and the demo use local files only and download nothing (weights or data sets).
OFFLINE_ENV = "ADACLIP_OFFLINE"


class WeightsNotFoundError(FileNotFoundError):
    """Weights that are neither on disk nor downloadable (for example offline with an empty cache)."""


class WeightsIntegrityError(WeightsNotFoundError):
    """A file under a released checkpoint's name whose sha256 is not the published one.

    It derives from :class:`WeightsNotFoundError` because the released file is, in effect, not available: the input
    checks of the commands and of the demo list it with the missing files.
    """


@dataclass(frozen=True)
class ReleasedCheckpoint:
    """A checkpoint released by the AdaCLIP authors.

    Attributes:
        name: Short name used for ``checkpoint=...``.
        filename: File name in the hub repository and in ``ADACLIP_WEIGHTS_DIR``.
        trained_on: Auxiliary data the prompts were trained on.
        use_for: Target data the checkpoint is meant for in the paper's protocol.
        sha256: The file's SHA-256 as the mirror (:data:`HF_REPO_ID`) publishes it, in lower-case hex.
    """

    name: str
    filename: str
    trained_on: str
    use_for: str
    sha256: str


RELEASED_CHECKPOINTS: dict[str, ReleasedCheckpoint] = {
    checkpoint.name: checkpoint
    for checkpoint in (
        ReleasedCheckpoint(
            "mvtec_colondb",
            "pretrained_mvtec_colondb.pth",
            "MVTec AD + ColonDB (test splits)",
            "every data set except MVTec AD and ColonDB (VisA, MPDD, BTAD, medical, ...)",
            "be51a42c052bd4cf060e54f503a1f5d0b2a3b899bc8dc2e243042f18b215427e",
        ),
        ReleasedCheckpoint(
            "visa_clinicdb",
            "pretrained_visa_clinicdb.pth",
            "VisA + ClinicDB (test splits)",
            "MVTec AD and ColonDB",
            "3deabbbaf1e412cfdfcb42923a500b986f4b9ee96ccbc7a735d89dbc87df44c8",
        ),
        ReleasedCheckpoint(
            "all",
            "pretrained_all.pth",
            "every data set of the paper",
            "demos only: it has seen the test data of every benchmark",
            "33e8d3db1cb4aab030866b8b70a46e10aa27ebf2c23b5463cb07f2574addd98c",
        ),
    )
}


def downloads_disabled() -> bool:
    """Whether ``ADACLIP_OFFLINE`` forbids downloads (``1``, ``true``, ``yes`` or ``on``, in any case)."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


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


# (resolved path, size, mtime in ns) -> sha256: each file is hashed once per process while it is unchanged.
_SHA256_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file in lower-case hex, computed once per process for as long as its size and mtime hold."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if (known := _SHA256_CACHE.get(key)) is not None:
        return known
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    _SHA256_CACHE[key] = digest.hexdigest()
    return _SHA256_CACHE[key]


def _verified(released: ReleasedCheckpoint, path: Path, origin: Literal["weights_dir", "hub"]) -> Path:
    """``path`` when its bytes are the released file's; :class:`WeightsIntegrityError` naming both hashes if not."""
    actual = file_sha256(path)
    if actual == released.sha256:
        return path
    if origin == "weights_dir":
        remedy = (
            f"Replace it with the released file (huggingface-cli download {HF_REPO_ID} {released.filename} "
            f"--revision {RELEASED_REVISION} --local-dir {path.parent}), or remove it from {WEIGHTS_DIR_ENV}"
        )
    else:
        remedy = (
            f"The cached download is damaged: fetch it again (huggingface-cli download {HF_REPO_ID} "
            f"{released.filename} --revision {RELEASED_REVISION} --force-download)"
        )
    msg = (
        f"Refusing the released AdaCLIP checkpoint {released.name!r}: {path} has sha256 {actual}, but "
        f"{released.filename} as published by {HF_REPO_ID} has sha256 {released.sha256}.\n{remedy}. "
        f"A checkpoint of your own is used without this check when given by its path "
        f"(checkpoint='/path/to/file.pth', --model.checkpoint /path/to/file.pth)."
    )
    raise WeightsIntegrityError(msg)


def download_released_checkpoint(name: str) -> Path:
    """Return the local path of a verified released checkpoint, downloading it into the Hugging Face cache if missing.

    ``ADACLIP_WEIGHTS_DIR`` is searched first for the checkpoint's file name; the download is pinned to
    :data:`RELEASED_REVISION`. Wherever the file comes from, its sha256 must be the published one
    (``ReleasedCheckpoint.sha256``); each file is hashed once per process while its size and mtime are unchanged.
    A checkpoint given by its path is not looked up here and not checked.

    Args:
        name: ``"mvtec_colondb"``, ``"visa_clinicdb"`` or ``"all"``.

    Raises:
        ValueError: Unknown name.
        WeightsNotFoundError: Not on disk and not downloadable (offline, no cache).
        WeightsIntegrityError: The file found has other bytes than the released one (the message names both hashes).
    """
    if name not in RELEASED_CHECKPOINTS:
        msg = f"Unknown released AdaCLIP checkpoint {name!r}; choose one of {sorted(RELEASED_CHECKPOINTS)} or a path."
        raise ValueError(msg)
    released = RELEASED_CHECKPOINTS[name]
    filename = released.filename
    if (local := find_in_weights_dir(filename)) is not None:
        return _verified(released, local, "weights_dir")
    from huggingface_hub import hf_hub_download  # noqa: PLC0415

    try:
        with hub_access():
            path = Path(hf_hub_download(repo_id=HF_REPO_ID, filename=filename, revision=RELEASED_REVISION))
    except Exception as error:  # the hub raises many types (offline, HTTP, missing file)
        msg = (
            f"The released AdaCLIP checkpoint {name!r} ({filename}) is not available: it is not in the Hugging Face "
            f"cache ({hub_cache_dir()}) and downloading it from https://huggingface.co/{HF_REPO_ID} failed "
            f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}).\n"
            f"Supply it in one of these ways:\n"
            f"  - pass its path: checkpoint='/path/to/{filename}' (--model.checkpoint /path/to/{filename});\n"
            f"  - put {filename} into a folder and set {WEIGHTS_DIR_ENV}=/that/folder;\n"
            f"  - download it once online: huggingface-cli download {HF_REPO_ID} {filename} "
            f"--revision {RELEASED_REVISION} (fills the cache; set HF_HOME or HF_HUB_CACHE to move it)."
        )
        raise WeightsNotFoundError(msg) from error
    return _verified(released, path, "hub")


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


def locate_weights(
    backbone: str | Mapping[str, Any] | None,
    backbone_weights: str | Path | None,
    checkpoint: str | Path | None,
    *,
    local_only: bool,
) -> tuple[dict[str, Path], dict[str, WeightsNotFoundError]]:
    """Find the weight files a model needs before it is built: the check the commands and the demo run first.

    Only what is looked up by name is checked: the CLIP weights of a pretrained tag of a named backbone, and a released
    checkpoint (verified like :func:`download_released_checkpoint`). Paths, config dicts and unknown names are left
    to the model, whose own checks name them.

    Args:
        backbone: The backbone (an open_clip name, or a config dict / its JSON, which has no pretrained tags).
        backbone_weights: A pretrained tag (``"openai"``), a path, or ``None``.
        checkpoint: A released checkpoint name, a path, or ``None``.
        local_only: Look in ``ADACLIP_WEIGHTS_DIR`` and the Hugging Face cache only; download nothing.

    Returns:
        The files found and the errors of the ones missing, each under ``"backbone_weights"`` or ``"checkpoint"``.
    """
    lookups = {}
    if isinstance(checkpoint, str) and checkpoint in RELEASED_CHECKPOINTS:
        lookups["checkpoint"] = lambda: download_released_checkpoint(checkpoint)
    if (
        isinstance(backbone, str)
        and not backbone.lstrip().startswith("{")
        and backbone_weights
        and not Path(backbone_weights).expanduser().exists()
    ):
        lookups["backbone_weights"] = lambda: download_clip_weights(backbone, str(backbone_weights))
    found: dict[str, Path] = {}
    missing: dict[str, WeightsNotFoundError] = {}
    with hub_cache_only(local_only):
        for key, lookup in lookups.items():
            try:
                found[key] = Path(lookup())
            except WeightsNotFoundError as error:
                missing[key] = error
            except ValueError:  # an unknown tag: the model's own check names it
                pass
    return found, missing
