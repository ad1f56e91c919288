"""Image segmentation datasets as one-frame videos, for static-image pre-training.

Every image with its mask is a "video" of one frame; training clips made with
``data.clip.sampling=static`` are that frame and random affine copies of it (`vos.data.clips`,
`vos.data.affine`), with the exact flow between the copies. Several roots are read at once
(``dataset.roots``), each in one of these layouts (found by looking, or named with ``layout``):

=========  ==================================================  ==============================
layout     files                                               datasets
=========  ==================================================  ==============================
ecssd      ``images/<n>.jpg`` + ``ground_truth_mask/<n>.png``  ECSSD
duts       ``<S>-Image/<n>.jpg`` + ``<S>-Mask/<n>.png``        DUTS (``DUTS-TR-Image/``, and
                                                               ``DUTS-TE-Image/`` if present)
hrsod      ``imgs/<n>.jpg`` + ``gt/<n>.png``                   HRSOD
msra10k    ``<n>.jpg`` + ``<n>.png`` side by side              MSRA10K (its ``Imgs/`` folder)
fss1000    ``<class>/<n>.jpg`` + ``<class>/<n>.png``           FSS-1000
pair       ``images: DIR`` + ``masks: DIR`` (given)            anything else
=========  ==================================================  ==============================

An image and its mask share the file stem. Images are ``.jpg``/``.jpeg`` (also ``.png`` and
``.bmp`` where masks live in a folder of their own); masks are ``.png`` (or ``.bmp``).

Masks (``mask_type``):

- ``binary`` (salient-object datasets): grayscale, RGB or palette files whose foreground is
  bright: a pixel is object 1 where its gray value is > 127 (for palette files, where its
  index is not 0), background elsewhere;
- ``instance``: palette or grayscale label maps whose values are object ids (0 background,
  255 void), as DAVIS annotations; RGB files are refused.

An image without a mask, or a mask without an image, is an error naming them (a wrong pair
of folders shows up at once); ``unmatched="skip"`` leaves them out and logs how many.

``short_side`` resizes every image (and its mask, nearest) so that its shorter side has that
many pixels, so that ``data.clip.crop`` fits and clips of one batch have one size; None keeps
the files' sizes. Large JPEGs are decoded at a reduced scale when that suffices.

Video names are ``<name>/<stem>`` (``<name>/<class>/<stem>`` for FSS-1000), ``name`` being the
entry's ``name`` or its folder's name, so names from several roots never collide. ``repeats``
(per root) weighs how often a root's images are drawn for training clips
(`VideoSource.sampling_weights`), as datasets repeated in a concatenation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from vos.data import palette
from vos.data.palette import ImageReadError
from vos.data.source import DatasetError, ScannedSource, VideoInfo, describe_folder
from vos.data.sources.folder_source import listing, object_labels

log = logging.getLogger(__name__)

MASK_TYPES = ("binary", "instance")
UNMATCHED = ("error", "skip")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
SIDE_BY_SIDE_IMAGE_SUFFIXES = (".jpg", ".jpeg")  # where .png files are the masks
MASK_SUFFIXES = (".png", ".bmp")
ENTRY_KEYS = ("root", "layout", "images", "masks", "name", "mask_type", "repeats")


def _files(folder: Path, suffixes: Sequence[str]) -> dict[str, Path]:
    """``stem -> path`` of the files in ``folder`` with one of ``suffixes`` (any case)."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in suffixes and not path.name.startswith("."):
            found.setdefault(path.stem, path)
    return found


@dataclass(frozen=True)
class FolderPair:
    """One folder of images and the folder of their masks (the same folder side by side);
    ``prefix`` goes before the stems in the video names (FSS-1000's class)."""

    images: Path
    masks: Path
    prefix: str = ""

    @property
    def side_by_side(self) -> bool:
        return self.images == self.masks


# -- layouts ---------------------------------------------------------------------------------


def _named_pair(image_dir: str, mask_dir: str) -> Callable[[Path], list[FolderPair]]:
    def find(root: Path) -> list[FolderPair]:
        if (root / image_dir).is_dir() and (root / mask_dir).is_dir():
            return [FolderPair(root / image_dir, root / mask_dir)]
        return []

    return find


def _find_duts(root: Path) -> list[FolderPair]:
    pairs = []
    for images in sorted(root.glob("*-Image")):
        masks = root / f"{images.name[: -len('-Image')]}-Mask"
        if images.is_dir() and masks.is_dir():
            pairs.append(FolderPair(images, masks))
    return pairs


def _holds_pairs(folder: Path) -> bool:
    images = _files(folder, SIDE_BY_SIDE_IMAGE_SUFFIXES)
    return bool(images) and bool(set(images) & set(_files(folder, (".png",))))


def _find_msra10k(root: Path) -> list[FolderPair]:
    return [FolderPair(root, root)] if _holds_pairs(root) else []


def _find_fss1000(root: Path) -> list[FolderPair]:
    if _files(root, SIDE_BY_SIDE_IMAGE_SUFFIXES):
        return []  # images at the top: not a folder of class folders
    classes = [child for child in sorted(root.iterdir()) if child.is_dir()]
    # every class folder holds pairs (the first 20 are looked at): a folder of datasets
    # with one MSRA10K-like folder among them is not FSS-1000
    if not classes or not all(_holds_pairs(child) for child in classes[:20]):
        return []
    return [FolderPair(child, child, prefix=f"{child.name}/") for child in classes]


@dataclass(frozen=True)
class Layout:
    name: str
    description: str
    find: Callable[[Path], list[FolderPair]]


LAYOUTS: dict[str, Layout] = {
    layout.name: layout
    for layout in (
        Layout("ecssd", "images/ + ground_truth_mask/", _named_pair("images", "ground_truth_mask")),
        Layout("duts", "<name>-Image/ + <name>-Mask/, e.g. DUTS-TR-Image/", _find_duts),
        Layout("hrsod", "imgs/ + gt/", _named_pair("imgs", "gt")),
        Layout("msra10k", "<n>.jpg + <n>.png side by side", _find_msra10k),
        Layout("fss1000", "<class>/<n>.jpg + <class>/<n>.png", _find_fss1000),
    )
}
LAYOUT_NAMES = (*LAYOUTS, "pair", "auto")


def _tried() -> str:
    return "; ".join(f"{layout.name} ({layout.description})" for layout in LAYOUTS.values())


def detect_layout(root: Path) -> tuple[str, list[FolderPair]] | None:
    """The first layout of `LAYOUTS` that ``root`` is in, with its folder pairs."""
    for layout in LAYOUTS.values():
        pairs = layout.find(root)
        if pairs:
            return layout.name, pairs
    return None


# -- the configuration of one root -----------------------------------------------------------


@dataclass(frozen=True)
class StaticRoot:
    """One entry of ``dataset.roots``, resolved: its label, layout, folders and options."""

    name: str
    layout: str
    pairs: list[FolderPair]
    mask_type: str
    repeats: float
    where: str  # how errors name the entry: "dataset.roots[1] (/data/ECSSD)"


def _entry(raw: object, index: int) -> dict:
    where = f"dataset.roots[{index}]"
    if isinstance(raw, (str, Path)):
        return {"root": str(raw)}
    if not isinstance(raw, Mapping):
        raise DatasetError(
            f"{where} must be a folder or a mapping with root/images/masks; got {raw!r}"
        )
    entry = dict(raw)
    unknown = sorted(set(entry) - set(ENTRY_KEYS))
    if unknown:
        raise DatasetError(f"{where}: unknown keys {unknown}; known: {list(ENTRY_KEYS)}")
    return entry


def resolve_root(raw: object, index: int, mask_type: str) -> StaticRoot:
    """Check one ``dataset.roots`` entry against the disk and find its folders."""
    entry = _entry(raw, index)
    where = f"dataset.roots[{index}]"
    layout = str(entry.get("layout") or "auto")
    if layout not in LAYOUT_NAMES:
        raise DatasetError(f"{where}.layout={layout!r} is not one of {list(LAYOUT_NAMES)}")
    entry_mask_type = str(entry.get("mask_type") or mask_type)
    if entry_mask_type not in MASK_TYPES:
        raise DatasetError(f"{where}.mask_type={entry_mask_type!r} is not one of {MASK_TYPES}")
    try:
        repeats = float(entry.get("repeats", 1))
    except (TypeError, ValueError):
        repeats = float("nan")
    if not repeats > 0:
        raise DatasetError(f"{where}.repeats must be > 0; got {entry.get('repeats')!r}")
    root = Path(entry["root"]).expanduser() if entry.get("root") else None
    if entry.get("images") or entry.get("masks") or layout == "pair":
        pairs = [_explicit_pair(entry, root, where)]
        layout = "pair"
        label = entry.get("name") or (root.name if root else pairs[0].images.name)
        where = f"{where} ({pairs[0].images})"
    else:
        if root is None:
            raise DatasetError(f"{where} has neither root nor images/masks folders")
        if not root.is_dir():
            raise DatasetError(
                f"{where}: static dataset root not found: {root} (found: {root.parent} "
                f"{describe_folder(root.parent)})"
            )
        where = f"{where} ({root})"
        layout, pairs = _layout_pairs(root, layout, where)
        label = entry.get("name") or root.name
    return StaticRoot(str(label), layout, pairs, entry_mask_type, repeats, where)


def _explicit_pair(entry: dict, root: Path | None, where: str) -> FolderPair:
    folders = {}
    for key in ("images", "masks"):
        if not entry.get(key):
            raise DatasetError(f"{where}: layout 'pair' needs both images and masks folders")
        folder = Path(entry[key]).expanduser()
        if root is not None and not folder.is_absolute():
            folder = root / folder
        if not folder.is_dir():
            parent = folder.parent
            raise DatasetError(
                f"{where}.{key} folder not found: {folder} (found: {parent} "
                f"{describe_folder(parent)})"
            )
        folders[key] = folder
    return FolderPair(folders["images"], folders["masks"])


def _layout_pairs(root: Path, layout: str, where: str) -> tuple[str, list[FolderPair]]:
    if layout != "auto":
        pairs = LAYOUTS[layout].find(root)
        if not pairs:
            raise DatasetError(
                f"{where}: not in the {layout!r} layout ({LAYOUTS[layout].description}); "
                f"found: {root} {describe_folder(root)}{_nested_hint(root)}"
            )
        return layout, pairs
    found = detect_layout(root)
    if found is None:
        raise DatasetError(
            f"{where}: layout not recognised. Tried {_tried()}; found: {root} "
            f"{describe_folder(root)}{_nested_hint(root)}. Name the layout "
            "(layout: ecssd|duts|hrsod|msra10k|fss1000) or give the folders "
            "({images: DIR, masks: DIR})"
        )
    return found


def _nested_hint(root: Path) -> str:
    """`` (inside, in known layouts: <child> (ecssd), ...; give each as a root)`` when folders
    one level down are datasets (an archive extracted into a folder of its own, or a folder
    of datasets)."""
    found = []
    for child in sorted(root.iterdir()) if root.is_dir() else ():
        if child.is_dir():
            layout = detect_layout(child)
            if layout is not None:
                found.append(f"{child} ({layout[0]})")
    if not found:
        return ""
    return f" (inside, in known layouts: {listing(found)}; give each as a root)"


# -- the source ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Item:
    image: Path
    mask: Path
    root: int  # index into StaticImageSource.roots


class StaticImageSource(ScannedSource):
    """Images with masks from one or more roots, each a one-frame video (module docstring).

    ``roots``: entries of ``dataset.roots``, each a folder (layout found by looking) or a
    mapping with ``root``, ``layout`` (``auto``, ``ecssd``, ``duts``, ``hrsod``, ``msra10k``,
    ``fss1000``, ``pair``), ``images`` and ``masks`` (folders, relative to ``root`` if given;
    layout ``pair``), ``name`` (the video-name prefix), ``mask_type`` and ``repeats``.
    ``mask_type``: ``binary`` or ``instance`` for entries that do not set theirs.
    ``unmatched``: ``error`` or ``skip`` (images without a mask and masks without an image).
    ``short_side``: resize to this shorter side (None: keep the size).

    The constructor lists the folders and pairs the files; `info` reads an image's header
    (and, for instance masks, the mask, to know its objects); pixels are read on demand.
    """

    def __init__(
        self,
        roots: Sequence[object],
        mask_type: str = "binary",
        unmatched: str = "error",
        short_side: int | None = None,
    ) -> None:
        if isinstance(roots, (str, Path, Mapping)):
            roots = [roots]
        if not roots:
            raise DatasetError(
                "dataset.roots is empty: give one or more folders of images and masks"
            )
        if mask_type not in MASK_TYPES:
            raise DatasetError(f"dataset.mask_type={mask_type!r} is not one of {MASK_TYPES}")
        if unmatched not in UNMATCHED:
            raise DatasetError(f"dataset.unmatched={unmatched!r} is not one of {UNMATCHED}")
        if short_side is not None and int(short_side) < 1:
            raise DatasetError(f"dataset.short_side must be a positive size or null: {short_side}")
        self.short_side = None if short_side is None else int(short_side)
        self.unmatched = unmatched
        self.roots = [resolve_root(raw, index, mask_type) for index, raw in enumerate(roots)]
        self._labels = self._unique_labels()
        self.skipped: dict[str, tuple[int, int]] = {}  # label -> (images, masks) left out
        self._items: dict[str, _Item] = {}
        for index, root in enumerate(self.roots):
            self._add_root(index, root)
        super().__init__(list(self._items))

    def _unique_labels(self) -> list[str]:
        labels: list[str] = []
        for index, root in enumerate(self.roots):
            label = root.name.replace("/", "_") or f"root{index}"
            labels.append(label if label not in labels else f"{label}-{index}")
        return labels

    def _add_root(self, index: int, root: StaticRoot) -> None:
        label = self._labels[index]
        image_suffixes = IMAGE_SUFFIXES
        count, lonely_images, lonely_masks = 0, [], []
        for pair in root.pairs:
            side_by_side = pair.side_by_side
            image_suffixes = SIDE_BY_SIDE_IMAGE_SUFFIXES if side_by_side else IMAGE_SUFFIXES
            images = _files(pair.images, image_suffixes)
            masks = _files(pair.masks, (".png",) if side_by_side else MASK_SUFFIXES)
            lonely_images += [images[s] for s in sorted(set(images) - set(masks))]
            lonely_masks += [masks[s] for s in sorted(set(masks) - set(images))]
            for stem in sorted(set(images) & set(masks)):
                self._items[f"{label}/{pair.prefix}{stem}"] = _Item(
                    images[stem], masks[stem], index
                )
                count += 1
        if lonely_images or lonely_masks:
            self._unmatched(root, lonely_images, lonely_masks)
            self.skipped[label] = (len(lonely_images), len(lonely_masks))
        if count == 0:
            folders = ", ".join(
                str(p.images) if p.side_by_side else f"{p.images} + {p.masks}"
                for p in root.pairs[:3]
            )
            raise DatasetError(
                f"{root.where}: no image with a mask ({root.layout} layout: {folders}; images "
                f"{'/'.join(image_suffixes)}, masks {'/'.join(MASK_SUFFIXES)} with the same stem)"
            )

    def _unmatched(self, root: StaticRoot, images: list[Path], masks: list[Path]) -> None:
        parts = []
        if images:
            parts.append(f"{len(images)} images have no mask: {listing([str(p) for p in images])}")
        if masks:
            parts.append(f"{len(masks)} masks have no image: {listing([str(p) for p in masks])}")
        if self.unmatched == "error":
            raise DatasetError(
                f"{root.where}: " + "; ".join(parts) + " (set dataset.unmatched=skip to leave "
                "them out)"
            )
        log.warning(
            "%s: skipped %d images without a mask and %d masks without an image",
            root.where,
            len(images),
            len(masks),
        )

    # -- VideoSource ------------------------------------------------------------------------

    def sampling_weights(self) -> list[float] | None:
        if all(root.repeats == 1 for root in self.roots):
            return None
        return [self.roots[self._items[name].root].repeats for name in self._videos]

    def read_frame(self, video: str, index: int) -> np.ndarray:
        item, info = self._item(video, index)
        return self._read_image(item.image, (info.height, info.width))

    def read_mask(self, video: str, index: int) -> np.ndarray:
        item, info = self._item(video, index)
        return self._read_mask(item, (info.height, info.width))

    # -- helpers ----------------------------------------------------------------------------

    def _item(self, video: str, index: int) -> tuple[_Item, VideoInfo]:
        info = self.info(video)
        if index != 0:
            raise IndexError(f"frame {index} out of range for {video!r} (an image: 1 frame)")
        return self._items[video], info

    def folders(self) -> list[Path]:
        found = []
        for root in self.roots:
            for pair in root.pairs:
                found += [pair.images, pair.masks]
        return list(dict.fromkeys(found))

    def _scan(self, video: str) -> VideoInfo:
        item = self._items.get(video)
        if item is None:
            raise DatasetError(
                f"unknown image {video!r}; names are <name>/<stem> with names "
                f"{sorted(set(self._labels))}"
            )
        height, width = self._target_size(*self._image_size(item.image))
        first_frames = {1: 0}
        if self.roots[item.root].mask_type == "instance":
            mask = self._read_mask(item, (height, width))
            first_frames = {label: 0 for label in object_labels(mask)}
        return VideoInfo(
            name=video,
            frame_names=[item.image.stem],
            height=height,
            width=width,
            first_frames=first_frames,
            annotated=[0],
        )

    def _target_size(self, height: int, width: int) -> tuple[int, int]:
        if self.short_side is None or min(height, width) == self.short_side:
            return height, width
        scale = self.short_side / min(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))

    def _read_image(self, path: Path, size: tuple[int, int]) -> np.ndarray:
        try:
            with Image.open(path) as image:
                original = image.size[::-1]
                if image.format == "JPEG" and size[0] < original[0]:
                    image.draft("RGB", (size[1], size[0]))  # decode at 1/2, 1/4 or 1/8
                frame = np.asarray(image.convert("RGB"), dtype=np.uint8)
        except (UnidentifiedImageError, OSError, SyntaxError) as error:
            raise ImageReadError(f"corrupt or unreadable image {path}: {error}") from error
        if frame.shape[:2] != size:
            shrink = size[0] < frame.shape[0]
            frame = cv2.resize(
                frame,
                (size[1], size[0]),
                interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR,
            )
        return np.ascontiguousarray(frame)

    def _read_mask(self, item: _Item, size: tuple[int, int]) -> np.ndarray:
        path = item.mask
        if self.roots[item.root].mask_type == "instance":
            mask = palette.read_mask(path)  # P or L label maps; refuses RGB, naming the path
        else:
            mask = _read_binary_mask(path)
        image_size = self._image_size(item.image)
        if mask.shape != image_size:
            raise DatasetError(
                f"mask {path} is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image "
                f"{item.image} is {image_size[1]}x{image_size[0]}"
            )
        if mask.shape != size:
            mask = cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
        return np.ascontiguousarray(mask)

    @staticmethod
    def _image_size(path: Path) -> tuple[int, int]:
        try:
            with Image.open(path) as image:
                return image.size[::-1]
        except (UnidentifiedImageError, OSError, SyntaxError) as error:
            raise ImageReadError(f"corrupt or unreadable image {path}: {error}") from error


def _read_binary_mask(path: Path) -> np.ndarray:
    """Object 1 where the mask is bright (> 127; palette files: index not 0), else 0."""
    if not path.is_file():
        raise ImageReadError(f"mask not found: {path}")
    try:
        with Image.open(path) as image:
            if image.mode == "P":
                return (np.asarray(image) != 0).astype(np.uint8)
            gray = np.asarray(image.convert("L"))
    except (UnidentifiedImageError, OSError, SyntaxError) as error:
        raise ImageReadError(f"corrupt or unreadable mask {path}: {error}") from error
    return (gray > 127).astype(np.uint8)
