import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor

from vos.model.aggregation import soft_aggregate
from vos.model.encoders import ResNetTrunk, build_resnet
from vos.model.memory import MemoryBank
from vos.model.network import VOSNetwork
from vos.model.readers import ReaderState, STMReader
from vos.model.readers.base import FrameFeatures


def tiny_network(**kwargs) -> VOSNetwork:
    torch.manual_seed(0)
    return VOSNetwork(
        STMReader(16, 32), key_depth=18, value_depth=18, decoder_channels=16, **kwargs
    )


def test_soft_aggregation_sums_to_one_and_follows_stm():
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(2, 3, 5, 7, generator=g)
    logits = soft_aggregate(probs)
    assert logits.shape == (2, 4, 5, 7)
    label_probs = F.softmax(logits, dim=1)
    torch.testing.assert_close(label_probs.sum(dim=1), torch.ones(2, 5, 7))
    # em_0 = prod(1 - p_i): its odds are the background logit
    background = torch.prod(1 - probs, dim=1)
    torch.testing.assert_close(torch.sigmoid(logits[:, 0]), background.clamp(1e-7, 1 - 1e-7))
    torch.testing.assert_close(torch.sigmoid(logits[:, 1:]), probs.clamp(1e-7, 1 - 1e-7))


def test_soft_aggregation_absent_objects_get_no_mass():
    probs = torch.full((1, 2, 3, 3), 0.9)
    present = torch.tensor([[True, False]])
    label_probs = F.softmax(soft_aggregate(probs, present), dim=1)
    assert torch.all(label_probs[:, 2] < 1e-6)
    torch.testing.assert_close(label_probs.sum(dim=1), torch.ones(1, 3, 3))


def _entry(value: float, objects: int = 2):
    keys = {"res4": torch.full((1, 4, 2, 2), value)}
    values = {"res4": torch.full((1, objects, 3, 2, 2), value)}
    return keys, values


def test_memory_cap_keeps_first_and_newest():
    bank = MemoryBank(max_frames=4)
    for t in range(0, 50, 5):
        bank.add(t, *_entry(t), permanent=t == 0)
        assert len(bank.entries) <= 4
    assert [e.frame_index for e in bank.entries] == [0, 35, 40, 45]
    bank.set_temporary(49, *_entry(49))
    assert bank.frame_indices == [0, 35, 40, 45, 49]
    assert bank.keys().shape == (1, 4, 5, 2, 2)
    assert bank.values().shape == (1, 2, 3, 5, 2, 2)
    # memorising a newer frame retires the temporary one
    bank.add(50, *_entry(50))
    assert bank.frame_indices == [0, 40, 45, 50]


def test_memory_unbounded_and_invalid_cap():
    bank = MemoryBank(max_frames=None)
    for t in range(20):
        bank.add(t, *_entry(t))
    assert len(bank) == 20
    with pytest.raises(ValueError, match="max_memory_frames"):
        MemoryBank(max_frames=0)
    with pytest.raises(ValueError, match="holds no frame"), torch.inference_mode():
        MemoryBank().values()


def test_add_objects_pads_with_invalid_values():
    bank = MemoryBank()
    bank.add(0, *_entry(1.0), permanent=True)
    bank.add_objects(1)
    assert bank.values().shape == (1, 3, 3, 1, 2, 2)
    assert torch.all(bank.values()[:, 2] == 0)
    assert bank.object_valid().tolist() == [[[True], [True], [False]]]


def _stacked_reference(bank: MemoryBank, per_object_keys: bool = False) -> dict[str, Tensor]:
    """The whole memory stacked anew from its entries, as reads were made before stacks were kept."""
    entries = bank.entries + ([bank.temporary] if bank.temporary is not None else [])
    return {
        "keys": torch.stack([e.keys["res4"] for e in entries], dim=3 if per_object_keys else 2),
        "values": torch.stack([e.values["res4"] for e in entries], dim=3),
        "valid": torch.stack([e.object_valid for e in entries], dim=2),
    }


@pytest.mark.parametrize("per_object_keys", [False, True])
def test_memory_reads_are_kept_between_frames_and_equal_a_fresh_stack(per_object_keys):
    """Without autograd a read of the whole memory is a view of stacks kept between frames:
    through memorised frames, replaced temporary frames, dropped frames and joining objects,
    it equals stacking every entry anew, and a frame that only replaces the temporary frame
    reuses the same storage."""
    g = torch.Generator().manual_seed(0)

    def frame(objects: int) -> tuple[dict, dict]:
        key_shape = (1, objects, 4, 2, 3) if per_object_keys else (1, 4, 2, 3)
        return (
            {"res4": torch.randn(*key_shape, generator=g)},
            {"res4": torch.randn(1, objects, 3, 2, 3, generator=g)},
        )

    def read(bank: MemoryBank) -> dict[str, Tensor]:
        if per_object_keys:  # such a bank is read folded; unfold to compare with the entries
            folded = bank.folded()
            objects = bank.num_objects
            keys = folded.keys().unflatten(0, (1, objects))
            values = folded.values()[:, 0].unflatten(0, (1, objects))
            valid = folded.object_valid()[:, 0].unflatten(0, (1, objects))
            return {"keys": keys, "values": values, "valid": valid}
        return {"keys": bank.keys(), "values": bank.values(), "valid": bank.object_valid()}

    bank = MemoryBank(max_frames=3)
    objects = 2
    pointers = []
    with torch.inference_mode():
        for t in range(12):
            if t == 7:  # an object joins: every stored frame changes shape
                bank.add_objects(1)
                objects = 3
            if t % 3 == 0:
                bank.add(t, *frame(objects), permanent=t == 0)
            else:
                bank.set_temporary(t, *frame(objects))
            if t == 10:  # a stored frame's validity replaced: same shapes, new contents
                bank.entries[0].object_valid = torch.tensor([[True, False, True]])
            got = read(bank)
            want = _stacked_reference(bank, per_object_keys)
            for name in want:
                torch.testing.assert_close(got[name], want[name], rtol=0, atol=0)
            pointers.append((t, got["values"].data_ptr()))
    # frames 1 → 2, 4 → 5, 10 → 11 only replace the temporary frame: the same storage
    same = {t for (t, ptr), (_, before) in zip(pointers[1:], pointers) if ptr == before}
    assert {2, 5, 11} <= same


def test_memory_reads_with_autograd_are_fresh_stacks():
    """Training reads with autograd: a frame memorised after a read must not disturb the graph
    of that read (a kept stack written in place would fail the backward)."""
    g = torch.Generator().manual_seed(0)
    value = torch.randn(1, 2, 3, 2, 3, generator=g, requires_grad=True)
    bank = MemoryBank(max_frames=3)
    bank.add(0, {"res4": torch.randn(1, 4, 2, 3, generator=g)}, {"res4": value}, permanent=True)
    first = bank.values().square().sum()
    bank.set_temporary(1, {"res4": torch.randn(1, 4, 2, 3, generator=g)}, {"res4": value * 2})
    second = bank.values().sum()
    (first + second).backward()
    torch.testing.assert_close(value.grad, 2 * value.detach() + 3)


@pytest.mark.parametrize("grad", [False, True])
def test_pixel_major_memory_reads_are_the_same_tensors_laid_out_as_pixel_rows(grad):
    """``pixel_major=True`` reads equal the default ones, and their flattened memory is
    ``[B, N, C]`` rows with each row's channels contiguous (what `gather_read` takes without
    a copy): keys along Ck, values along O·Cv, for kept stacks (batch 2, a capped bank with
    spare slots), subsets and fresh stacks under autograd."""
    g = torch.Generator().manual_seed(0)
    bank = MemoryBank(max_frames=3)
    with torch.set_grad_enabled(grad):
        for t in range(6):
            keys = {"res2": torch.randn(2, 4, 5, 6, generator=g)}
            values = {"res2": torch.randn(2, 3, 7, 5, 6, generator=g)}
            if t % 2 == 0:
                bank.add(t, keys, values, permanent=t == 0)
            else:
                bank.set_temporary(t, keys, values)
            for positions in (None, [0, -1]):
                key = bank.keys("res2", positions, pixel_major=True)
                value = bank.values("res2", positions, pixel_major=True)
                assert torch.equal(key, bank.keys("res2", positions))
                assert torch.equal(value, bank.values("res2", positions))
                key_rows = key.flatten(2).transpose(1, 2)  # [B, N, Ck]
                value_rows = value.flatten(1, 2).flatten(2).transpose(1, 2)  # [B, N, O·Cv]
                assert key_rows.stride(2) == 1 and key_rows.stride(1) == 4
                assert value_rows.stride(2) == 1 and value_rows.stride(1) == 3 * 7
                # flattening made no copy
                assert value_rows.data_ptr() == value.data_ptr()
                assert key_rows.data_ptr() == key.data_ptr()


def small_query(index: int, generator: torch.Generator, dtype=torch.float32) -> FrameFeatures:
    """A query frame for the 4-key, 3-value STM readers below: a 2×3 res4 grid."""
    return FrameFeatures(
        index=index,
        frames=torch.zeros(1, 3, 32, 48),
        features={},
        keys={"res4": torch.randn(1, 4, 2, 3, generator=generator, dtype=dtype)},
        query_value=torch.randn(1, 3, 2, 3, generator=generator, dtype=dtype),
    )


def test_stm_reader_late_object_path_matches_shared_path():
    """With every object valid, the per-object masked read equals the shared-affinity read."""
    reader = STMReader(key_channels=4, value_channels=3).eval()
    g = torch.Generator().manual_seed(0)
    bank = MemoryBank()
    for t in range(3):
        bank.add(
            t,
            {"res4": torch.randn(1, 4, 2, 3, generator=g)},
            {"res4": torch.randn(1, 2, 3, 2, 3, generator=g)},
        )
    query = small_query(3, g)
    shared = reader.read(query, bank, ReaderState()).features["res4"]
    assert shared.shape == (1, 2, 6, 2, 3)
    # force the per-object path with an object that joined at the last frame
    bank.entries[0].object_valid = torch.tensor([[True, False]])
    bank.entries[1].object_valid = torch.tensor([[True, False]])
    masked = reader.read(query, bank, ReaderState()).features["res4"]
    torch.testing.assert_close(masked[:, 0], shared[:, 0])
    # object 1 reads only frame 2: a single memory frame read
    only_last = MemoryBank()
    only_last.add(2, bank.entries[2].keys, {"res4": bank.entries[2].values["res4"]})
    torch.testing.assert_close(
        masked[:, 1], reader.read(query, only_last, ReaderState()).features["res4"][:, 1]
    )


def test_memory_knows_on_the_host_whether_every_object_holds_a_value(monkeypatch):
    """Readers pick the shared-affinity read by `MemoryBank.all_valid`, answered without a
    device read-back when the frames were memorised without an explicit validity."""
    reader = STMReader(key_channels=4, value_channels=3).eval()
    g = torch.Generator().manual_seed(1)
    bank = MemoryBank()
    for t in range(2):
        bank.add(t, {"res4": torch.randn(1, 4, 2, 3, generator=g)},
                 {"res4": torch.randn(1, 2, 3, 2, 3, generator=g)})  # fmt: skip
    query = small_query(2, g)

    def no_read_back(self, *args, **kwargs):
        raise AssertionError("Tensor.all read back")

    with monkeypatch.context() as patch:
        patch.setattr(torch.Tensor, "all", no_read_back)
        assert bank.all_valid() and bank.all_valid([0, -1])
        reader.read(query, bank, ReaderState())
    # an explicit validity is asked once, and a new one replaces the answer
    bank.add(2, bank.entries[1].keys, bank.entries[1].values, torch.tensor([[True, False]]))
    assert not bank.all_valid() and bank.all_valid([0, 1])
    bank.entries[2].object_valid = torch.tensor([[True, True]])
    assert bank.all_valid()
    # objects that join hold no value in the frames already stored
    bank.add_objects(1)
    assert not bank.all_valid() and not bank.folded().all_valid()


def test_network_shapes_and_frozen_batchnorm():
    net = tiny_network()
    net.train()
    assert all(not m.training for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    frames = torch.rand(2, 3, 64, 96)
    frame = net.encode_frame(frames, 0)
    assert frame.keys["res4"].shape == (2, 16, 4, 6)
    bank = MemoryBank()
    probs = torch.rand(2, 3, 64, 96)
    net.memorize(bank, frame, probs, permanent=True)
    assert bank.values().shape == (2, 3, 32, 1, 4, 6)
    logits = net.segment(frame, bank, ReaderState())
    assert logits.shape == (2, 4, 64, 96)


def test_backbone_weights_from_local_file(tmp_path):
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    trunk = ResNetTrunk(18, str(path), extra_inputs=("mask", "others"))
    torch.testing.assert_close(trunk.layer1[0].conv1.weight, reference.layer1[0].conv1.weight)
    torch.testing.assert_close(trunk.conv1.weight, reference.conv1.weight)
    # masks start with no effect on the pretrained RGB features
    assert all(torch.all(conv.weight == 0) for conv in trunk.conv1_extra.values())
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        build_resnet(18, str(tmp_path / "missing.pth"))
    with pytest.raises(ValueError, match="do not fit a ResNet-50"):
        build_resnet(50, str(path))
    with pytest.raises(ValueError, match="depth=20"):
        build_resnet(20, None)


def test_stm_reader_is_the_softmax_over_memory_of_scaled_dot_products():
    """STM's read written out (float64): for each object, W = softmax over the T·H·W memory
    pixels of k_n·q_m/√Ck, readout v·W, then the query's own value; an object that joined at
    the last frame reads that frame alone."""
    reader = STMReader(key_channels=4, value_channels=3).eval()
    g = torch.Generator().manual_seed(1)
    bank = MemoryBank()
    for t in range(3):
        valid = torch.tensor([[True, t == 2]])
        bank.add(
            t,
            {"res4": torch.randn(1, 4, 2, 3, generator=g, dtype=torch.float64)},
            {"res4": torch.randn(1, 2, 3, 2, 3, generator=g, dtype=torch.float64)},
            valid,
        )
    query = small_query(3, g, torch.float64)
    out = reader.read(query, bank, ReaderState()).features["res4"]
    assert out.shape == (1, 2, 6, 2, 3)
    keys = torch.stack([e.keys["res4"][0] for e in bank.entries], 1).flatten(1)  # [Ck, N]
    values = torch.stack([e.values["res4"][0] for e in bank.entries], 2).flatten(2)  # [O, Cv, N]
    logits = keys.T @ query.keys["res4"][0].flatten(1) / 2.0  # √Ck = 2; [N, M]
    frames = [slice(0, 18), slice(12, 18)]  # object 1 joined at frame 2
    for obj, memory in enumerate(frames):
        expected = values[obj][:, memory] @ torch.softmax(logits[memory], dim=0)
        torch.testing.assert_close(out[0, obj, :3].flatten(1), expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(out[0, obj, 3:], query.query_value[0], rtol=0, atol=0)
