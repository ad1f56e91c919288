"""The two network families (model/arch=stm|stcn): where keys and values come from, padding,
the decoders' heads, and backbone weights by torchvision name."""

from __future__ import annotations

import copy
import urllib.error

import pytest
import torch
import torch.nn.functional as F
from helpers import compose_config, two_object_clip

from vos.model.blocks import CBAM
from vos.model.decoder import STCNDecoder
from vos.model.encoders import BackboneWeightsError, ResNetTrunk
from vos.model.memory import MemoryBank
from vos.model.network import VOSNetwork, build_network
from vos.model.padding import pad_to_stride, padding_for, unpad, zero_outside
from vos.model.readers import STMReader


def network(arch: str, reader=None) -> VOSNetwork:
    torch.manual_seed(0)
    return VOSNetwork(
        reader or STMReader(8, 16),
        arch=arch,
        key_depth=18,
        value_depth=18,
        decoder_channels=8,
        freeze_batchnorm=False,
    ).eval()


def model_config(model: str, arch: str):
    return compose_config("train", [f"model={model}", f"model/arch={arch}"]).model


@pytest.mark.parametrize("model", ["stm", "stcn", "rmnet", "hmmn", "lcm", "lmrc"])
def test_each_paper_gets_its_own_network_and_runs_on_the_other(model):
    paper_arch = {"lmrc": "stcn", "stcn": "stcn"}.get(model, "stm")
    assert compose_config("train", [f"model={model}"]).model.arch.name == paper_arch
    for arch in ("stm", "stcn"):
        cfg = model_config(model, arch)
        net = build_network(cfg).eval()
        frames = torch.rand(1, 3, 48, 64)
        flow = torch.zeros(1, 2, 48, 64)
        bank, state = MemoryBank(), net.reader.new_state()
        probs = torch.rand(1, 2, 48, 64)
        net.memorize(bank, net.encode_frame(frames, 0), probs, permanent=True)
        state.previous_probs = probs
        for t in (1, 2):
            frame = net.encode_frame(torch.rand(1, 3, 48, 64), t, flow=flow)
            logits = net.segment(frame, bank, state)
            net.memorize(bank, frame, probs)
        assert logits.shape == (1, 3, 48, 64) and torch.isfinite(logits).all()


def test_stm_memory_keys_see_the_mask_and_stcn_keys_do_not():
    frames = torch.rand(1, 3, 32, 48)
    masks = torch.zeros(1, 2, 32, 48)
    masks[:, 0, :16] = 1
    masks[:, 1, 16:] = 1
    stm, stcn = network("stm"), network("stcn")
    keys, values = stm.encode_memory(stm.encode_frame(frames, 0), masks)
    assert keys["res4"].shape == (1, 2, 8, 2, 3) and values["res4"].shape == (1, 2, 16, 2, 3)
    assert not torch.allclose(keys["res4"][:, 0], keys["res4"][:, 1])
    frame = stcn.encode_frame(frames, 0)
    keys, _ = stcn.encode_memory(frame, masks)
    assert keys["res4"].shape == (1, 8, 2, 3)
    torch.testing.assert_close(keys["res4"], frame.keys["res4"])  # the query's own key


def test_stm_network_reads_each_object_as_its_own_memory():
    """Objects folded into the batch read exactly what each object's memory alone gives."""
    net = network("stm")
    g = torch.Generator().manual_seed(1)
    frames = [torch.rand(2, 3, 32, 48, generator=g) for _ in range(3)]  # two clips
    together = MemoryBank()
    for t in range(2):
        masks = torch.rand(2, 2, 32, 48, generator=g)
        net.memorize(together, net.encode_frame(frames[t], t), masks, permanent=t == 0)
    query = net.encode_frame(frames[2], 2)
    read = net.read(query, together, net.reader.new_state()).features["res4"]
    assert not torch.allclose(read[:, 0], read[:, 1])
    for o in range(2):
        alone = MemoryBank()
        for entry in together.entries:
            alone.add(
                entry.frame_index,
                {"res4": entry.keys["res4"][:, o]},  # this object's key: [B, Ck, h, w]
                {"res4": entry.values["res4"][:, o : o + 1]},
            )
        own = net.reader.read(query, alone, net.reader.new_state()).features["res4"]
        torch.testing.assert_close(read[:, o], own[:, 0])


def test_stm_network_handles_an_object_that_joins_later():
    net = network("stm")
    bank, state = MemoryBank(), net.reader.new_state()
    frame = net.encode_frame(torch.rand(1, 3, 32, 48), 0)
    net.memorize(bank, frame, torch.rand(1, 1, 32, 48), permanent=True)
    bank.add_objects(1)
    assert bank.entries[0].keys["res4"].shape[1] == 2
    assert bank.object_valid().tolist() == [[[True], [False]]]
    net.memorize(bank, frame, torch.rand(1, 2, 32, 48), permanent=True)
    logits = net.segment(net.encode_frame(torch.rand(1, 3, 32, 48), 1), bank, state)
    assert logits.shape == (1, 3, 32, 48) and torch.isfinite(logits).all()


def test_padding_is_centred_as_the_official_inference_code_pads():
    # pad_divide_by: the smaller half before, the larger after
    assert padding_for(480, 854) == (5, 5, 0, 0)
    assert padding_for(241, 427) == (2, 3, 7, 8)
    x = torch.rand(1, 2, 241, 427)
    padded = pad_to_stride(x)
    assert padded.shape[-2:] == (256, 432)
    assert torch.equal(unpad(padded, 241, 427), x)
    assert padded[..., :7, :].abs().sum() == 0 and padded[..., :, :2].abs().sum() == 0
    noisy = padded + 1
    cleaned = zero_outside(noisy, 241, 427)
    assert torch.equal(unpad(cleaned, 241, 427), x + 1)
    # and nothing is left outside the frame (element-wise: float sums of tensors of different
    # shapes need not round alike)
    assert torch.equal(cleaned, pad_to_stride(x + 1))


def test_stm_decoder_logit_is_the_two_channel_softmax():
    """STM takes softmax(2 channels)[:, 1]; the decoder returns l1 − l0 whose sigmoid it is."""
    net = network("stm")
    head = net.decoder.pred
    captured = []
    head.register_forward_hook(lambda _m, _i, out: captured.append(out))
    readout = torch.rand(1, 2, 32, 2, 3)
    skips = {"res3": torch.rand(1, 128, 4, 6), "res2": torch.rand(1, 64, 8, 12)}
    logits = net.decoder(readout, skips, (32, 48))
    two = F.interpolate(captured[0], size=(32, 48), mode="bilinear", align_corners=False)
    expected = F.softmax(two, dim=1)[:, 1].view(1, 2, 32, 48)
    torch.testing.assert_close(torch.sigmoid(logits), expected)
    assert network("stcn").decoder.pred.out_channels == 1


def test_cbam_follows_its_gates():
    torch.manual_seed(0)
    cbam = CBAM(32)
    x = torch.rand(2, 32, 5, 7)
    mlp = cbam.channel_mlp
    channel = torch.sigmoid(mlp(x.mean(dim=(2, 3))) + mlp(x.amax(dim=(2, 3))))[:, :, None, None]
    y = x * channel
    pooled = torch.stack([y.amax(dim=1), y.mean(dim=1)], dim=1)  # max first, as CBAM
    expected = y * torch.sigmoid(cbam.spatial_conv(pooled))
    torch.testing.assert_close(cbam(x), expected)


def test_stcn_value_trunk_has_a_bias_on_every_conv_and_one_sum_for_its_inputs():
    trunk = ResNetTrunk(18, None, extra_inputs=("mask", "others"), conv_bias=True)
    convs = [m for name, m in trunk.named_modules() if isinstance(m, torch.nn.Conv2d)]
    extra = set(map(id, trunk.conv1_extra.values()))
    assert all((m.bias is None) == (id(m) in extra) for m in convs)
    # the extra inputs add to conv1's response before bn1: a 5-channel conv1, split
    x = torch.rand(1, 3, 32, 32)
    m, o = torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32)
    trunk.eval()
    joined = torch.cat(
        [trunk.conv1.weight, trunk.conv1_extra["mask"].weight, trunk.conv1_extra["others"].weight],
        dim=1,
    )
    normalised = (x - trunk.mean) / trunk.std
    first = F.conv2d(torch.cat([normalised, m, o], 1), joined, trunk.conv1.bias, 2, 3)
    seen = []
    trunk.bn1.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    trunk(x, {"mask": m, "others": o})
    torch.testing.assert_close(seen[0], first, rtol=1e-4, atol=1e-5)


def test_backbone_weights_by_torchvision_name(monkeypatch):
    import torchvision

    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(BackboneWeightsError) as error:
        ResNetTrunk(50, "IMAGENET1K_V2")
    message = str(error.value)
    assert "model.backbone.weights=IMAGENET1K_V2" in message
    assert "resnet50-11ad3fa6.pth" in message and "\n" not in message
    with pytest.raises(BackboneWeightsError, match="IMAGENET1K_V1"):
        ResNetTrunk(18, "IMAGENET1K_V9")
    reference = torchvision.models.resnet18(weights=None).state_dict()
    monkeypatch.setattr(
        torchvision.models.WeightsEnum, "get_state_dict", lambda self, **_: reference
    )
    trunk = ResNetTrunk(18, "ResNet18_Weights.IMAGENET1K_V1")
    torch.testing.assert_close(trunk.layer3[1].conv2.weight, reference["layer3.1.conv2.weight"])


def test_frames_are_padded_black_or_with_the_mean_colour_that_normalises_to_zero():
    frames = torch.rand(1, 3, 40, 50)
    black = network("stm").pad_frames(frames)
    assert torch.equal(unpad(black, 40, 50), frames)
    assert black[..., :4, :].abs().sum() == 0  # 40 -> 48: 4 rows above, 4 below
    mean_net = VOSNetwork(
        STMReader(8, 16), arch="stcn", key_depth=18, value_depth=18, pad_frames_with="mean"
    )
    padded = mean_net.pad_frames(frames)
    torch.testing.assert_close(unpad(padded, 40, 50), frames)
    normalised = (padded - mean_net.encoders.key_encoder.mean) / mean_net.encoders.key_encoder.std
    assert normalised[..., :4, :].abs().max() < 1e-6 and normalised[..., :, :3].abs().max() < 1e-6
    with pytest.raises(ValueError, match="pad_frames_with"):
        VOSNetwork(STMReader(8, 16), key_depth=18, value_depth=18, pad_frames_with="grey")


def test_only_stms_network_memorises_masks_zeroed_outside_the_frame():
    """STM crops each prediction and pads it again with zeros before memorising it; STCN
    memorises the padded prediction as it is (docs/architecture.md)."""
    assert network("stm").masks_zeroed_outside_frame
    assert not network("stcn").masks_zeroed_outside_frame


def test_stcn_decoder_convolves_the_skips_once_per_frame_as_if_per_object():
    """STCN's decoder broadcasts the skip convs over the objects: the same logits as the skips
    expanded to every object first, and each skip conv sees the frame's batch only."""
    torch.manual_seed(0)
    decoder = STCNDecoder(16, {"res3": 8, "res2": 4}, channels=8).eval()
    readout = torch.randn(2, 3, 16, 2, 3)  # B = 2 frames, O = 3 objects
    skips = {"res3": torch.randn(2, 8, 4, 6), "res2": torch.randn(2, 4, 8, 12)}
    seen = []
    decoder.up_8_4.skip_conv.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    with torch.no_grad():
        logits = decoder(readout, skips, (32, 48))
        objects = readout.flatten(0, 1)
        x = decoder.compress(objects)
        for block, scale in ((decoder.up_16_8, "res3"), (decoder.up_8_4, "res2")):
            expanded = skips[scale].repeat_interleave(3, dim=0)
            upsampled = F.interpolate(x, size=expanded.shape[-2:], mode="bilinear")
            x = block.out_conv(block.skip_conv(expanded) + upsampled)
        expected = F.interpolate(decoder.pred(F.relu(x)), size=(32, 48), mode="bilinear")
    torch.testing.assert_close(logits, expected[:, 0].view(2, 3, 32, 48))
    assert seen[0] == 2


@pytest.mark.parametrize("model", ["stm", "stcn", "rmnet", "hmmn", "lcm", "lmrc"])
def test_channels_last_weights_give_the_same_logits_and_gradients(model):
    """channels_last=true (vos.train) converts the 4-D weights to NHWC: a training clip's
    logits and every weight's gradient equal those of the contiguous network."""
    torch.manual_seed(0)
    small = ["model.key_channels=8", "model.value_channels=16", "model.decoder_channels=8"]
    contiguous = build_network(compose_config("train", [f"model={model}", *small]).model).train()
    nhwc = copy.deepcopy(contiguous).to(memory_format=torch.channels_last)
    assert any(
        p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
        for p in nhwc.parameters()
    )
    frames, labels, present, flow = two_object_clip(batch=2)
    results = []
    for net in (contiguous, nhwc):
        torch.manual_seed(2)  # the readers' dropout draws the same
        logits = net.segment_clip(frames, labels, present, flow)
        loss = sum(F.cross_entropy(x, labels[:, t + 1]) for t, x in enumerate(logits))
        grads = torch.autograd.grad(
            loss, [p for p in net.parameters() if p.requires_grad], allow_unused=True
        )
        results.append((logits, grads))
    (logits_a, grads_a), (logits_b, grads_b) = results
    for a, b in zip(logits_a, logits_b, strict=True):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)
    trained = [name for name, p in contiguous.named_parameters() if p.requires_grad]
    for name, a, b in zip(trained, grads_a, grads_b, strict=True):
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-3, msg=name)
