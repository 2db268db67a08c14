"""AdaCLIP's weights: where they come from, how they are read safely, and the checkpoint format.

- :mod:`.hub`: ``ADACLIP_WEIGHTS_DIR``, the Hugging Face cache and hub, the released checkpoints;
- :mod:`.loading`: state dicts from files without executing pickled code, and key/shape checks;
- :mod:`.checkpoint`: the trainable tensors in the released and in our layout.
"""

from .checkpoint import (
    CHECKPOINT_FORMAT,
    RELEASED_PREFIX,
    from_released_layout,
    read_checkpoint,
    save_checkpoint,
    to_released_layout,
)
from .hub import (
    HF_REPO_ID,
    OFFLINE_ENV,
    RELEASED_CHECKPOINTS,
    RELEASED_REVISION,
    WEIGHTS_DIR_ENV,
    ReleasedCheckpoint,
    WeightsIntegrityError,
    WeightsNotFoundError,
    download_clip_weights,
    download_released_checkpoint,
    downloads_disabled,
    file_sha256,
    find_in_weights_dir,
    host_reachable,
    hub_access,
    hub_cache_dir,
    hub_cache_only,
    locate_weights,
)
from .loading import CheckpointError, check_state_dict, load_state_dict_file

__all__ = [
    "CHECKPOINT_FORMAT",
    "HF_REPO_ID",
    "OFFLINE_ENV",
    "RELEASED_CHECKPOINTS",
    "RELEASED_PREFIX",
    "RELEASED_REVISION",
    "WEIGHTS_DIR_ENV",
    "CheckpointError",
    "ReleasedCheckpoint",
    "WeightsIntegrityError",
    "WeightsNotFoundError",
    "check_state_dict",
    "download_clip_weights",
    "download_released_checkpoint",
    "downloads_disabled",
    "file_sha256",
    "find_in_weights_dir",
    "from_released_layout",
    "host_reachable",
    "hub_access",
    "hub_cache_dir",
    "hub_cache_only",
    "load_state_dict_file",
    "locate_weights",
    "read_checkpoint",
    "save_checkpoint",
    "to_released_layout",
]
