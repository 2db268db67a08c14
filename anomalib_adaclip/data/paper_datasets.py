"""The 14 data sets of the AdaCLIP paper: where each comes from, how it is laid out, and which data module reads it.

One :class:`PaperDataset` per data set, in :data:`PAPER_DATASETS` (keyed by the data-module class name, in the
paper's order: 7 industrial, then 7 medical). Four are read by anomalib's own modules (``MVTecAD``, ``Visa``,
``MPDD``, ``BTech``), whose layout and split are the paper's; the other ten by this package's modules in
:mod:`anomalib_adaclip.data.paper_datamodules`, which read the MVTec-style tree of the authors' processed copies.

The facts (sources, licences, sizes, the paper's test counts from its Supplementary Table 1) are collected here once;
the data modules' "data set missing" messages, ``anomalib-adaclip prepare-data`` and the documentation's data set table
read them from here. Licences marked "not verified" could not be checked from a copy of the source; check the source
page before redistributing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "PAPER_DATASETS",
    "PROCESSED_LAYOUT",
    "PaperDataset",
    "Task",
    "missing_dataset_message",
    "paper_dataset",
    "prepare_or_explain",
    "require_dataset",
]

Task = Literal["image", "pixel", "both"]
"""What the paper evaluates on a data set, image-level metrics only, pixel-level only, or both."""

PROCESSED_LAYOUT = (
    "<root>/<category>/train/good/          (may be empty: the benchmark is zero-shot)\n"
    "<root>/<category>/test/good/           (normal test images; absent for the pixel-only sets)\n"
    "<root>/<category>/test/<folder>/       (anomalous test images: every folder not named 'good')\n"
    "<root>/<category>/ground_truth/<folder>/  (one mask per anomalous image, same file-name stem, optionally with\n"
    "                                        _mask, _label or _segmentation; absent for the image-only sets)"
)
"""The MVTec-style tree the paper's data modules read (the authors' processed copies have it)."""

_ADACLIP_README = "https://github.com/caoyunkang/AdaCLIP#dataset-preparation"
_MVTEC_LAYOUT = (
    "<root>/<category>/train/good/, <root>/<category>/test/{good,<defect>}/, "
    "<root>/<category>/ground_truth/<defect>/<stem>_mask.png (the official release, unpacked)"
)


@dataclass(frozen=True)
class PaperDataset:
    """One of the paper's 14 data sets.

    Attributes:
        name: The data set's usual name, as the paper writes it.
        datamodule: Import path of the anomalib data module that reads it (``anomalib.data.MVTecAD``,
            ``anomalib_adaclip.data.KSDD``, ...).
        categories: The category folders, spelled as the data set (or the authors' processed copy) spells them.
        default_category: The data module's default category.
        task: What the paper evaluates: ``"image"`` (no masks), ``"pixel"`` (no normal test images) or ``"both"``.
        source: Where to get it (a URL, or where the URL is written).
        licence: The licence, as far as it could be checked.
        size: What the release holds.
        test_counts: The paper's test counts (normal, anomalous), summed over the categories.
        default_root: The data module's default ``root`` (the folder that holds the category folders).
        raw_layout: The layout of the public release that ``anomalib-adaclip prepare-data`` converts; empty where
            the data module reads the release (or the authors' copy) itself.
        notes: What a user must know to reproduce the paper's numbers (count disagreements, which copy to use).
        layout: The layout the data module reads under its ``root``.
        category_paths: Where under ``root`` a category's folder may be (``{category}`` is replaced); the data set
            is present when one of them is a folder.
    """

    name: str
    datamodule: str
    categories: tuple[str, ...]
    default_category: str
    task: Task
    source: str
    licence: str
    size: str
    test_counts: tuple[int, int]
    default_root: str
    raw_layout: str = ""
    notes: str = ""
    layout: str = PROCESSED_LAYOUT
    category_paths: tuple[str, ...] = ("{category}",)

    @property
    def key(self) -> str:
        """The registry key, the data module's class name (``"KSDD"``, ``"MVTecAD"``)."""
        return self.datamodule.rsplit(".", 1)[-1]

    @property
    def has_masks(self) -> bool:
        """Whether the anomalous test images have masks (every task but ``"image"``)."""
        return self.task != "image"

    @property
    def read_by_anomalib(self) -> bool:
        """Whether anomalib's own data module reads it (MVTec AD, VisA, MPDD, BTAD); else one of this package's."""
        return self.datamodule.startswith("anomalib.")

    @property
    def preparable(self) -> bool:
        """Whether ``anomalib-adaclip prepare-data`` converts its public release."""
        return bool(self.raw_layout)

    def datamodule_class(self) -> type:
        """The data module class (imported now: anomalib's modules import anomalib)."""
        module_name, class_name = self.datamodule.rsplit(".", 1)
        return getattr(import_module(module_name), class_name)

    def is_present(self, root: str | Path, category: str) -> bool:
        """Whether ``category`` of this data set is on disk under ``root`` (a folder, not checked further)."""
        return any((Path(root) / path.format(category=category)).is_dir() for path in self.category_paths)


_MVTEC_CATEGORIES = (
    "bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut", "pill", "screw", "tile",
    "toothbrush", "transistor", "wood", "zipper",
)  # fmt: skip
_VISA_CATEGORIES = (
    "candle", "capsules", "cashew", "chewinggum", "fryum", "macaroni1", "macaroni2", "pcb1", "pcb2", "pcb3", "pcb4",
    "pipe_fryum",
)  # fmt: skip
_DTD_CATEGORIES = (
    "Blotchy_099", "Fibrous_183", "Marbled_078", "Matted_069", "Mesh_114", "Perforated_037", "Stratified_154",
    "Woven_001", "Woven_068", "Woven_104", "Woven_125", "Woven_127",
)  # fmt: skip

_ENTRIES = (
    PaperDataset(
        name="MVTec AD",
        datamodule="anomalib.data.MVTecAD",
        categories=_MVTEC_CATEGORIES,
        default_category="bottle",
        task="both",
        source="https://www.mvtec.com/company/research/datasets/mvtec-ad",
        licence="CC BY-NC-SA 4.0",
        size="5,354 images, 15 categories (3,629 train normal, 1,725 test), pixel masks; about 4.9 GB",
        test_counts=(467, 1258),
        default_root="./datasets/MVTecAD",
        layout=_MVTEC_LAYOUT,
        notes="anomalib's MVTecAD reads the official release unchanged; its split is the paper's.",
    ),
    PaperDataset(
        name="VisA",
        datamodule="anomalib.data.Visa",
        categories=_VISA_CATEGORIES,
        default_category="capsules",
        task="both",
        source="https://github.com/amazon-science/spot-diff (VisA_20220922.tar)",
        licence="CC BY 4.0 per the spot-diff README (anomalib's docstring says CC BY-NC-SA 4.0)",
        size="10,821 images (9,621 normal, 1,200 anomalous), 12 categories, pixel masks",
        test_counts=(962, 1200),
        default_root="./datasets/visa",
        layout=(
            "<root>/<category>/Data/{Images,Masks}/... and <root>/split_csv/1cls.csv (the unpacked "
            "VisA_20220922.tar); anomalib's Visa writes <root>/visa_pytorch/<category>/ from them"
        ),
        category_paths=("visa_pytorch/{category}", "{category}"),
        notes="anomalib's Visa builds visa_pytorch/ from split_csv/1cls.csv, the split the paper uses.",
    ),
    PaperDataset(
        name="MPDD",
        datamodule="anomalib.data.MPDD",
        categories=("bracket_black", "bracket_brown", "bracket_white", "connector", "metal_plate", "tubes"),
        default_category="bracket_black",
        task="both",
        source="https://github.com/stepanje/MPDD (download link in its README)",
        licence="not stated in the repository; CC BY-NC-SA 4.0 per anomalib",
        size="over 1,000 images, 6 metal-part categories, pixel masks",
        test_counts=(176, 282),
        default_root="./datasets/MPDD",
        layout=_MVTEC_LAYOUT,
        notes="Manual download; anomalib's MPDD reads the official MVTec-style tree.",
    ),
    PaperDataset(
        name="BTAD",
        datamodule="anomalib.data.BTech",
        categories=("01", "02", "03"),
        default_category="01",
        task="both",
        source="https://avires.dimi.uniud.it/papers/btad/btad.zip",
        licence="CC BY-NC-SA 4.0 (per anomalib)",
        size="3 products, about 2.8 k images (not verified), pixel masks",
        test_counts=(451, 290),
        default_root="./datasets/BTech",
        layout=(
            "<root>/<category>/train/ok/, <root>/<category>/test/{ok,ko}/, <root>/<category>/ground_truth/ko/ (the "
            "unpacked btad.zip's BTech_Dataset_transformed/ as <root>)"
        ),
        notes="anomalib's BTech reads the official tree (normal folder 'ok', anomalous 'ko').",
    ),
    PaperDataset(
        name="KSDD (KolektorSDD)",
        datamodule="anomalib_adaclip.data.KSDD",
        categories=("SDD",),
        default_category="SDD",
        task="both",
        source="https://www.vicos.si/resources/kolektorsdd/",
        licence="CC BY-NC-SA 4.0 (per anomalib)",
        size="399 images of 50 commutators (347 defect-free, 52 defective), PartK_label.bmp masks",
        test_counts=(181, 74),
        default_root="./datasets/KSDD",
        raw_layout=(
            "<source>/kosNN/PartK.jpg + <source>/kosNN/PartK_label.bmp (the KolektorSDD v1 release, unzipped; "
            "<source> may also be its parent folder holding KolektorSDD/)"
        ),
        notes=(
            "Each image is cut into 3 thirds (top, middle, bottom); a third is anomalous if its label crop is "
            "non-zero; normal thirds are split 75/25 train/test. The paper's 181 normal test images may be a typo: "
            "a 75/25 split of the ~1,123 normal thirds gives ~281. prepare-data's seeded shuffle is not "
            "scikit-learn's, so its split differs from the authors' copy; use that copy to match their images."
        ),
    ),
    PaperDataset(
        name="DAGM 2007",
        datamodule="anomalib_adaclip.data.DAGM",
        categories=tuple(f"Class{k}" for k in range(1, 11)),
        default_category="Class1",
        task="both",
        source=(
            "https://hci.iwr.uni-heidelberg.de/content/weakly-supervised-learning-industrial-optical-inspection "
            "(mirrors: Kaggle mhskjelvareid/dagm-2007-competition-dataset-optical-inspection, Zenodo 12750201)"
        ),
        licence="not verified",
        size="10 synthetic texture classes, 512x512 grey PNG, coarse elliptic defect labels",
        test_counts=(6996, 1054),
        default_root="./datasets/DAGM",
        raw_layout="<source>/ClassK/{Train,Test}/NNNN.PNG + <source>/ClassK/{Train,Test}/Label/NNNN_label.PNG",
        notes=(
            "The authors' pre-processing keeps as many normal test images as defective ones, which does not give the "
            "paper's (6996, 1054); prepare-data keeps the release's own split instead (Train normals to train/good, "
            "Test normals to test/good, Test defectives to test/defect). Neither matches the paper's counts: use the "
            "authors' processed copy for that. If the release's Test halves hold the 7,000 normal and 1,050 "
            "defective images its description suggests, prepare-data gives (7000, 1050); not verified."
        ),
    ),
    PaperDataset(
        name="DTD-Synthetic",
        datamodule="anomalib_adaclip.data.DTDSynthetic",
        categories=_DTD_CATEGORIES,
        default_category="Woven_001",
        task="both",
        source=(
            "Aota et al., WACV 2023: Google Drive folder 10OyPzvI3H6llCZBxKxFlKWt1Pw1tkMK1 (linked in the AnomalyCLIP "
            "README)"
        ),
        licence="not verified (built from the DTD textures)",
        size="12 texture categories with synthetic defects, pixel masks",
        test_counts=(357, 947),
        default_root="./datasets/DTDSynthetic",
        notes="Released in the MVTec-style layout: no preparation needed.",
    ),
    PaperDataset(
        name="HeadCT",
        datamodule="anomalib_adaclip.data.HeadCT",
        categories=("headct",),
        default_category="headct",
        task="image",
        source="https://www.kaggle.com/datasets/felipekitamura/head-ct-hemorrhage (doi:10.34740/KAGGLE/DSV/152137)",
        licence="not verified",
        size="200 PNG CT slices (100 normal, 100 hemorrhage) and labels.csv; no masks",
        test_counts=(100, 100),
        default_root="./datasets/HeadCT",
        raw_layout=(
            "<source>/labels.csv (columns id, hemorrhage) + <source>/head_ct/NNN.png (<source> is the release's "
            "head_ct/ folder, or the folder holding it)"
        ),
    ),
    PaperDataset(
        name="BrainMRI",
        datamodule="anomalib_adaclip.data.BrainMRI",
        categories=("brain_mri",),
        default_category="brain_mri",
        task="image",
        source="https://www.kaggle.com/datasets/navoneel/brain-mri-images-for-brain-tumor-detection",
        licence="not verified",
        size="253 MRI slices (98 'no', 155 'yes'); no masks",
        test_counts=(98, 155),
        default_root="./datasets/BrainMRI",
        raw_layout="<source>/no/*.jpg (normal) + <source>/yes/*.jpg (tumour)",
        notes="Bayes-PFL's copy, said to be the AdaCLIP-curated one, has (85, 68) test images: unresolved.",
    ),
    PaperDataset(
        name="Br35H",
        datamodule="anomalib_adaclip.data.Br35H",
        categories=("br35h",),
        default_category="br35h",
        task="image",
        source="https://www.kaggle.com/datasets/ahmedhamada0/brain-tumor-detection",
        licence="not verified",
        size="3,000 MRI slices (1,500 'no', 1,500 'yes') and 60 unlabelled 'pred' images; no masks",
        test_counts=(1500, 1500),
        default_root="./datasets/Br35H",
        raw_layout="<source>/no/*.jpg (normal) + <source>/yes/*.jpg (tumour); a pred/ folder is ignored",
    ),
    PaperDataset(
        name="ISIC 2016",
        datamodule="anomalib_adaclip.data.ISIC",
        categories=("isic",),
        default_category="isic",
        task="pixel",
        source="https://challenge.isic-archive.com/data/ (ISIC 2016 Task 1 test set)",
        licence="ISIC archive terms (not verified for 2016)",
        size="379 dermoscopy test images with lesion masks",
        test_counts=(0, 379),
        default_root="./datasets/ISIC",
        raw_layout=(
            "<source>/ISBI2016_ISIC_Part1_Test_Data/ISIC_NNNNNNN.jpg + "
            "<source>/ISBI2016_ISIC_Part1_Test_GroundTruth/ISIC_NNNNNNN_Segmentation.png"
        ),
    ),
    PaperDataset(
        name="CVC-ColonDB",
        datamodule="anomalib_adaclip.data.ColonDB",
        categories=("ColonDB",),
        default_category="ColonDB",
        task="pixel",
        source="the PraNet polyp test bundle (figshare 21221579, linked in the AnomalyCLIP README)",
        licence="research use with citation (not verified)",
        size="380 colonoscopy frames with polyp masks",
        test_counts=(0, 380),
        default_root="./datasets/ColonDB",
        raw_layout="<source>/images/N.png + <source>/masks/N.png (PraNet's TestDataset/CVC-ColonDB)",
    ),
    PaperDataset(
        name="CVC-ClinicDB",
        datamodule="anomalib_adaclip.data.ClinicDB",
        categories=("ClinicDB",),
        default_category="ClinicDB",
        task="pixel",
        source="https://polyp.grand-challenge.org/CVCClinicDB/ (also in the PraNet polyp bundle, figshare 21221579)",
        licence="research use with citation (not verified)",
        size="612 colonoscopy frames (384x288) with polyp masks",
        test_counts=(0, 612),
        default_root="./datasets/ClinicDB",
        raw_layout=(
            "<source>/images/N.png + <source>/masks/N.png (PraNet's layout), or <source>/Original/N.tif + "
            "<source>/Ground Truth/N.tif (the CVC-ClinicDB release)"
        ),
    ),
    PaperDataset(
        name="TN3K",
        datamodule="anomalib_adaclip.data.TN3K",
        categories=("tn3k",),
        default_category="tn3k",
        task="pixel",
        source="https://github.com/haifangong/TRFE-Net-for-thyroid-nodule-segmentation (Baidu-pan link)",
        licence="not stated (open access; the repository's code is MIT)",
        size="3,493 thyroid ultrasound images with nodule masks (2,879 train, 614 test)",
        test_counts=(0, 614),
        default_root="./datasets/TN3K",
        raw_layout="<source>/test-image/NNNN.jpg + <source>/test-mask/NNNN.jpg (the release's test split; JPEG masks)",
    ),
)

PAPER_DATASETS: dict[str, PaperDataset] = {entry.key: entry for entry in _ENTRIES}
"""The 14 data sets, keyed by data-module class name, in the paper's order."""


def paper_dataset(name: str) -> PaperDataset:
    """The entry of a data set by its key (``"KSDD"``), case-insensitively.

    Raises:
        KeyError: The name is not one of the 14, with the list of names.
    """
    for key, entry in PAPER_DATASETS.items():
        if key.lower() == name.lower():
            return entry
    msg = f"unknown data set {name!r}; the paper's data sets are: {', '.join(PAPER_DATASETS)}"
    raise KeyError(msg)


def _either(paths: Iterable[Path]) -> str:
    """``a is not``, or ``neither a nor b is`` for several paths (followed by "a folder")."""
    names = [str(path) for path in paths]
    return f"{names[0]} is not" if len(names) == 1 else "neither " + " nor ".join(names) + " is"


def missing_dataset_message(dataset: PaperDataset, root: str | Path, category: str) -> str:
    """What to tell a user whose copy of ``dataset`` is not at ``root/category``: where to get it and put it.

    Nothing is ever downloaded: several of the sources need an account or accept terms first.
    """
    folders = _either(Path(root) / path.format(category=category) for path in dataset.category_paths)
    lines = [
        f"{dataset.name} data set not found: {folders} a folder.",
        f"Get it from {dataset.source} (licence: {dataset.licence}).",
    ]
    if dataset.preparable:
        lines += [
            f"Convert it: anomalib-adaclip prepare-data {dataset.key} --source <download> --dest {root}",
            f"(the release is expected as: {dataset.raw_layout});",
            f"or use the authors' processed copy ({_ADACLIP_README}) as it is.",
        ]
    elif dataset.layout == PROCESSED_LAYOUT:
        lines.append(f"It needs no conversion; the authors' processed copy ({_ADACLIP_README}) works as well.")
    lines += [f"{dataset.datamodule} reads {root} (its `root` argument) laid out as:", dataset.layout]
    return "\n".join(lines)


def require_dataset(name: str, root: str | Path, category: str) -> None:
    """Fail with :func:`missing_dataset_message` unless ``category`` of data set ``name`` is under ``root``.

    For anomalib's own modules, call it before their ``prepare_data``, which would try to download a missing data
    set.

    Raises:
        KeyError: ``name`` is not one of the paper's data sets.
        FileNotFoundError: The category's folder is missing.
    """
    dataset = paper_dataset(name)
    if not dataset.is_present(root, category):
        raise FileNotFoundError(missing_dataset_message(dataset, root, category))


def prepare_or_explain(datamodule: Any) -> None:
    """Run ``datamodule.prepare_data()``; if one of the paper's data sets is missing and cannot be had, say where.

    anomalib's ``MVTecAD``, ``Visa`` and ``BTech`` download a missing data set where their licence allows; offline (or
    for ``MPDD``, which anomalib cannot download) that ends in a network or file error far from the cause. This turns
    it into :func:`missing_dataset_message`. This package's data modules say it themselves (``prepare_data``), and
    data modules that are not among the paper's 14 are prepared as they are.

    Args:
        datamodule: An anomalib data module with ``root`` and ``category`` (any other is prepared unchanged).

    Raises:
        FileNotFoundError: A paper data set's category is missing and its data module could not provide it.
    """
    entry = next((item for item in PAPER_DATASETS.values() if type(datamodule) is item.datamodule_class()), None)
    root, category = getattr(datamodule, "root", None), getattr(datamodule, "category", None)
    if entry is None or not entry.read_by_anomalib or root is None or category is None:
        datamodule.prepare_data()
        return
    if entry.is_present(root, str(category)):
        datamodule.prepare_data()
        return
    try:
        datamodule.prepare_data()
    except Exception as error:  # anomalib: URLError offline, or its own message for a manual download (MPDD)
        message = f"{missing_dataset_message(entry, root, str(category))}\n({type(error).__name__}: {error})"
        raise FileNotFoundError(message) from error
