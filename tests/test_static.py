"""StaticImageSource (dataset=static): image datasets in their common layouts as one-frame
videos, their masks, several roots at once, static clips from them, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from data_writers import write_image_root
from helpers import TINY, compose_config
from hydra.utils import instantiate
from PIL import Image

from vos.data.clips import ClipDataset
from vos.data.palette import ImageReadError, write_mask
from vos.data.source import DatasetError
from vos.data.sources.static import StaticImageSource
from vos.lightning.training import train

FOLDER_LAYOUTS = ["ecssd", "duts", "hrsod", "msra10k", "fss1000"]


@pytest.mark.parametrize("layout", FOLDER_LAYOUTS)
def test_each_layout_is_recognised(tmp_path, layout):
    names = write_image_root(tmp_path / layout.upper(), layout)
    source = StaticImageSource([tmp_path / layout.upper()])
    assert source.roots[0].layout == layout
    assert source.videos() == names
    info = source.info(names[0])
    assert (info.num_frames, info.annotated, info.object_ids) == (1, [0], [1])
    assert (info.height, info.width) == (40, 56)
    assert source.read_frame(names[0], 0).shape == (40, 56, 3)
    mask = source.read_mask(names[0], 0)
    assert set(np.unique(mask)) == {0, 1}  # binary: 255 -> object 1


def test_explicit_pair_of_folders_and_named_layout(tmp_path):
    names = write_image_root(tmp_path / "mine", "pair")
    source = StaticImageSource(
        [{"root": tmp_path / "mine", "images": "photos", "masks": "labels", "name": "custom"}]
    )
    assert source.videos() == [name.replace("mine/", "custom/") for name in names]
    write_image_root(tmp_path / "E", "ecssd")
    assert StaticImageSource([{"root": tmp_path / "E", "layout": "ecssd"}]).roots[0].layout == (
        "ecssd"
    )
    # absolute folders without a root
    absolute = {"images": tmp_path / "mine" / "photos", "masks": tmp_path / "mine" / "labels"}
    assert len(StaticImageSource([absolute])) == 4


def test_several_roots_keep_names_apart_and_weigh_by_repeats(tmp_path):
    write_image_root(tmp_path / "a" / "data", "ecssd", count=3)
    write_image_root(tmp_path / "b" / "data", "msra10k", count=2)
    source = StaticImageSource(
        [tmp_path / "a" / "data", {"root": tmp_path / "b" / "data", "repeats": 4}]
    )
    names = source.videos()
    assert len(names) == len(set(names)) == 5  # same folder name: the second gets a suffix
    assert sum(name.startswith("data/") for name in names) == 3
    assert sum(name.startswith("data-1/") for name in names) == 2
    assert source.sampling_weights() == [1.0] * 3 + [4.0] * 2
    assert StaticImageSource([tmp_path / "a" / "data"]).sampling_weights() is None


def test_binary_masks_from_grayscale_rgb_and_palette_files(tmp_path):
    write_image_root(tmp_path / "E", "ecssd", count=3)
    masks = sorted((tmp_path / "E" / "ground_truth_mask").glob("*.png"))
    gray = np.asarray(Image.open(masks[0]))
    Image.fromarray(np.stack([gray] * 3, axis=-1)).save(masks[1])  # an RGB mask
    write_mask(masks[2], (gray > 0).astype(np.uint8))  # a palette mask with index 1
    soft = gray.copy()
    soft[soft > 0] = 100  # dark "foreground": below the threshold
    Image.fromarray(soft).save(masks[0])
    source = StaticImageSource([tmp_path / "E"])
    first, rgb, indexed = (source.read_mask(name, 0) for name in source.videos())
    assert not first.any()
    assert np.array_equal(rgb, (gray > 127).astype(np.uint8))
    assert np.array_equal(indexed, (gray > 127).astype(np.uint8))


def test_instance_masks_keep_their_ids(tmp_path):
    write_image_root(tmp_path / "E", "ecssd", count=1)
    (mask_path,) = (tmp_path / "E" / "ground_truth_mask").glob("*.png")
    labels = np.zeros((40, 56), dtype=np.uint8)
    labels[2:10, 2:10] = 2
    labels[20:30, 20:40] = 5
    labels[0, :] = 255
    write_mask(mask_path, labels)
    source = StaticImageSource([tmp_path / "E"], mask_type="instance")
    (name,) = source.videos()
    assert source.info(name).object_ids == [2, 5]
    assert np.array_equal(source.read_mask(name, 0), labels)
    # per root, and RGB files are refused in instance mode, naming the file
    Image.fromarray(np.stack([labels] * 3, axis=-1)).save(mask_path)
    source = StaticImageSource([{"root": tmp_path / "E", "mask_type": "instance"}])
    with pytest.raises(ImageReadError, match=str(mask_path)):
        source.info(name)


def test_short_side_resizes_image_and_mask(tmp_path):
    write_image_root(tmp_path / "E", "ecssd", count=1, height=40, width=56)
    source = StaticImageSource([tmp_path / "E"], short_side=80)
    (name,) = source.videos()
    assert (source.info(name).height, source.info(name).width) == (80, 112)
    assert source.read_frame(name, 0).shape == (80, 112, 3)
    mask = source.read_mask(name, 0)
    assert mask.shape == (80, 112) and set(np.unique(mask)) == {0, 1}
    smaller = StaticImageSource([tmp_path / "E"], short_side=20)
    assert smaller.read_frame(name, 0).shape == (20, 28, 3)


def test_static_clips_from_images_batch_at_one_size(tmp_path):
    write_image_root(tmp_path / "E", "ecssd", count=3, height=40, width=56)
    write_image_root(tmp_path / "M", "msra10k", count=3, height=60, width=44)
    source = StaticImageSource([tmp_path / "E", tmp_path / "M"], short_side=48)
    dataset = ClipDataset(
        source, length=6, num_frames=3, sampling="static", crop=[32, 32], with_flow=True
    )
    for index in range(len(dataset)):
        item = dataset[index]
        assert item["frames"].shape == (3, 3, 32, 32)
        assert item["flow"].shape == (3, 2, 32, 32)
        assert item["present"][0]


# ---------------------------------------------------------------------------- bad input


def test_unrecognised_layout_names_the_layouts_tried_and_what_is_there(tmp_path):
    (tmp_path / "odd" / "pictures").mkdir(parents=True)
    (tmp_path / "odd" / "notes.txt").write_text("")
    with pytest.raises(DatasetError) as error:
        StaticImageSource([tmp_path / "odd"])
    message = str(error.value)
    assert "dataset.roots[0]" in message and str(tmp_path / "odd") in message
    assert all(layout in message for layout in FOLDER_LAYOUTS)
    assert "images/ + ground_truth_mask/" in message and "DUTS-TR-Image/" in message
    assert "pictures/" in message and "notes.txt" in message


def test_a_folder_of_datasets_points_at_them(tmp_path):
    write_image_root(tmp_path / "all" / "ECSSD", "ecssd")
    write_image_root(tmp_path / "all" / "DUTS-TR", "duts")
    with pytest.raises(DatasetError, match="DUTS-TR \\(duts\\).*ECSSD \\(ecssd\\)"):
        StaticImageSource([tmp_path / "all"])


def test_named_layout_that_does_not_fit(tmp_path):
    write_image_root(tmp_path / "E", "ecssd")
    with pytest.raises(
        DatasetError, match="not in the 'hrsod' layout \\(imgs/ \\+ gt/\\).*images/"
    ):
        StaticImageSource([{"root": tmp_path / "E", "layout": "hrsod"}])


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (lambda root: {"root": root, "mask": "x"}, "unknown keys \\['mask'\\]"),
        (lambda root: {"root": root, "layout": "coco"}, "layout='coco' is not one of"),
        (lambda root: {"root": root, "mask_type": "soft"}, "mask_type='soft'"),
        (lambda root: {"root": root, "repeats": 0}, "repeats must be > 0"),
        (lambda root: {"root": root, "images": "photos"}, "needs both images and masks"),
        (
            lambda root: {"root": root, "images": "photos", "masks": "nope"},
            "masks folder not found: .*nope",
        ),
        (lambda root: {"root": root / "missing"}, "root not found: .*missing"),
        (lambda root: 42, "must be a folder or a mapping"),
    ],
)
def test_bad_entries_are_named(tmp_path, entry, message):
    write_image_root(tmp_path / "R", "pair")
    with pytest.raises(DatasetError, match=f"dataset.roots\\[0\\].*{message}"):
        StaticImageSource([entry(tmp_path / "R")])


def test_bad_options_are_named(tmp_path):
    write_image_root(tmp_path / "E", "ecssd")
    with pytest.raises(DatasetError, match="roots is empty"):
        StaticImageSource([])
    with pytest.raises(DatasetError, match="unmatched='drop'"):
        StaticImageSource([tmp_path / "E"], unmatched="drop")
    with pytest.raises(DatasetError, match="mask_type='rgb'"):
        StaticImageSource([tmp_path / "E"], mask_type="rgb")


def test_unmatched_files_are_named_or_skipped(tmp_path, caplog):
    root = tmp_path / "E"
    write_image_root(root, "ecssd", count=4)
    lonely_image = root / "images" / "im000.jpg"
    (root / "ground_truth_mask" / "im000.png").unlink()
    lonely_mask = root / "ground_truth_mask" / "extra.png"
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(lonely_mask)
    with pytest.raises(DatasetError) as error:
        StaticImageSource([root])
    message = str(error.value)
    assert f"1 images have no mask: {lonely_image}" in message
    assert f"1 masks have no image: {lonely_mask}" in message
    assert "dataset.unmatched=skip" in message
    with caplog.at_level("WARNING"):
        source = StaticImageSource([root], unmatched="skip")
    assert len(source) == 3 and source.skipped == {"E": (1, 1)}
    assert "skipped 1 images without a mask and 1 masks without an image" in caplog.text


def test_a_root_without_any_pair(tmp_path):
    (tmp_path / "E" / "images").mkdir(parents=True)
    (tmp_path / "E" / "ground_truth_mask").mkdir()
    with pytest.raises(DatasetError, match="no image with a mask"):
        StaticImageSource([{"root": tmp_path / "E", "layout": "ecssd"}])


def test_mask_of_another_size_and_corrupt_image(tmp_path):
    root = tmp_path / "E"
    write_image_root(root, "ecssd", count=2)
    mask = root / "ground_truth_mask" / "im000.png"
    Image.fromarray(np.zeros((10, 10), dtype=np.uint8)).save(mask)
    (root / "images" / "im001.jpg").write_bytes(b"not a jpeg")
    source = StaticImageSource([root])
    with pytest.raises(DatasetError, match=f"mask {mask} is 10x10 .* image .*im000.jpg is 56x40"):
        source.read_mask("E/im000", 0)
    with pytest.raises(ImageReadError, match="im001.jpg"):
        source.info("E/im001")
    with pytest.raises(DatasetError, match="unknown image 'E/nope'"):
        source.info("E/nope")


# ---------------------------------------------------------------------------- config


def test_config_builds_the_source_and_trains_without_validation(tmp_path):
    write_image_root(tmp_path / "ECSSD", "ecssd")
    write_image_root(tmp_path / "fss", "fss1000")
    overrides = [item for item in TINY if not item.startswith(("dataset.", "checkpoint."))]
    roots = f"[{tmp_path / 'ECSSD'},{{root:{tmp_path / 'fss'},layout:fss1000,repeats:2}}]"
    cfg = compose_config(
        "train",
        [
            *overrides,
            "dataset=static",
            f"dataset.roots={roots}",
            "dataset.short_side=40",
            "data.clip.sampling=static",
            "data.clip.crop=[32,32]",
            "trainer.max_steps=1",
            "dataset.eval=null",
        ],
    )
    source = instantiate(cfg.dataset.train)
    assert len(source) == 8 and source.sampling_weights() == [1.0] * 4 + [2.0] * 4
    metrics = train(cfg, tmp_path / "run")
    assert metrics["global_step"] == 1
    assert "val/J&F-Mean" not in metrics


def test_default_eval_is_a_generated_split():
    cfg = compose_config("train", ["dataset=static", "dataset.roots=[unused]"])
    eval_source = instantiate(cfg.dataset.eval)
    assert len(eval_source) == 8 and eval_source.info(eval_source.videos()[0]).num_frames == 36
