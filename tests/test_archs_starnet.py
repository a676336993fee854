"""STARnet: part counts (keys and counts: test_archs_facts), native and contract calls, flow convention, training
loss, VGG feature loss."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from spec_keys import key_list, read_keys
from stvsr.archs import build_arch, count_parameters
from stvsr.archs.flow import DISFlow, FlowProvider, from_network_flow, to_network_flow
from stvsr.archs.starnet import STARV4, STARnet, STARnetTrainOutput, denormalize, normalize
from stvsr.model.weights import CheckpointMismatchError, load_official, save_state_dict
from stvsr.train.perceptual import VGGFeatureLoss, vgg19_layer_names

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread

OFFICIAL = {"which_model_G": "STARnet", "base_filter": 256, "feat": 64, "num_stages": 3, "n_resblock": 5,
            "scale_factor": 4}  # fmt: skip
TINY = {"which_model_G": "starnet", "base_filter": 16, "feat": 8, "num_stages": 2, "n_resblock": 1,
        "scale_factor": 4, "rbpn_resblocks": 1, "unet_nf": 4, "unet_depth": 3}  # fmt: skip
REPO = Path(__file__).resolve().parents[1]


def tiny(seed: int = 0, **overrides) -> STARnet:
    torch.manual_seed(seed)
    return build_arch({**TINY, **overrides})


def texture(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """A smooth random RGB texture in [0, 1] (1, 3, h, w): blurred noise, good for flow."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, h // 4 + 3, w // 4 + 3, generator=g)
    x = F.interpolate(x, size=(h + 12, w + 12), mode="bicubic", align_corners=False)[..., 6:-6, 6:-6]
    return x.clamp(0, 1)


# --------------------------------------------------------------------------------- official settings
@pytest.fixture(scope="module")
def official():
    model = build_arch(OFFICIAL)
    yield model
    del model
    gc.collect()


def test_official_part_counts(official):
    """The parameters of the flow U-Net and of the RBPN core (keys and counts: test_archs_facts)."""
    assert count_parameters(official.flow_net) == 53_518_594
    assert count_parameters(official.model.RBPN) == 12_763_303


def test_official_checkpoint_with_module_prefix_loads_strict(official):
    """An official DataParallel checkpoint (keys 'module.model...', 'module.flow_net...') loads strictly."""
    state = {f"module.{k}": v for k, v in official.state_dict().items()}
    report = load_official(official, state, strict=True)
    assert report.ok
    with pytest.raises(CheckpointMismatchError, match="missing keys"):
        load_official(official, {k: v for k, v in list(state.items())[1:]}, strict=True)


def test_v4_core_alone_counts():
    core = STARV4()
    assert count_parameters(core) == 58_092_269
    state = core.state_dict()
    assert len(state) == 306 and not list(core.buffers())
    expected = [(k[len("model.") :], shape) for k, shape, _ in read_keys("starnet") if k.startswith("model.")]
    assert [(k, tuple(v.shape)) for k, v in state.items()] == expected


def test_registry_and_constructor_errors():
    with pytest.raises(ValueError, match="missing required key"):
        build_arch({"which_model_G": "starnet", "feat": 8})
    with pytest.raises(ValueError, match="scale_factor"):
        tiny(scale_factor=3)
    with pytest.raises(ValueError, match="key_frames"):
        tiny(key_frames="right")
    with pytest.raises(ValueError, match="unknown flow provider"):
        tiny(flow="pyflow")


def test_init_rules():
    """Core: kaiming_normal (fan_in, gain sqrt 2), zero bias, PReLU 0.25; U-Net: PyTorch defaults."""
    model = tiny(base_filter=64)
    conv = model.model.motion[0].conv1  # 64 -> 64, 3x3: std sqrt(2 / 576)
    assert torch.count_nonzero(conv.bias) == 0
    assert abs(conv.weight.std().item() / (2 / (64 * 9)) ** 0.5 - 1) < 0.05
    deconv = model.model.interp_block[-1].deconv  # ConvTranspose2d weight (in, out, k, k): fan_in = out * k * k
    assert torch.count_nonzero(deconv.bias) == 0
    assert abs(deconv.weight.std().item() / (2 / (8 * 64)) ** 0.5 - 1) < 0.05
    assert model.model.RBPN.feat0.act.weight.item() == 0.25
    unet_conv = model.flow_net.inc.conv.conv[0]
    assert torch.count_nonzero(unet_conv.bias) > 0  # default init: uniform bias
    assert unet_conv.weight.abs().max() <= 1 / (8 * 9) ** 0.5


def test_small_variant_options():
    """refine_flow=False (the official first stage): U-Net kept in the state_dict but unused; output_init_scale."""
    stage1 = tiny(refine_flow=False).train()
    assert key_list(stage1) == key_list(tiny())
    assert stage1.min_size == 1
    out = stage1.supervised(torch.rand(1, 2, 3, 4, 4))  # below the U-Net's minimum: fine without it
    assert out.frames.shape == (1, 3, 3, 16, 16)
    stage1.supervised_loss(out, torch.rand(1, 3, 3, 16, 16), torch.nn.L1Loss()).backward()
    assert all(p.grad is None for p in stage1.flow_net.parameters())
    ref, small = tiny(seed=4), tiny(seed=4, output_init_scale=0.01)
    assert torch.allclose(small.model.reconstruction_h.conv.weight, 0.01 * ref.model.reconstruction_h.conv.weight)
    assert torch.equal(small.model.motion[0].conv1.weight, ref.model.motion[0].conv1.weight)


def test_tiny_checkpoint_file_round_trip(tmp_path):
    src, dst = tiny(seed=1).eval(), tiny(seed=2).eval()
    path = tmp_path / "starnet.pth"
    save_state_dict(src, path)
    state = torch.load(path, weights_only=True)
    torch.save({f"module.{k}": v for k, v in state.items()}, path)  # as the official DataParallel files
    assert load_official(dst, path, strict=True).ok
    x = torch.rand(1, 2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))
    with pytest.raises(CheckpointMismatchError, match="shape mismatches"):
        load_official(tiny(feat=4), path, strict=True)


# ---------------------------------------------------------------------------------------- forward
def test_native_call_shapes():
    model = tiny().eval()
    b, h, w = 2, 16, 20
    im1, im2 = normalize(torch.rand(b, 3, h, w)), normalize(torch.rand(b, 3, h, w))
    ff, fb = torch.randn(b, 2, h, w) * 0.01, torch.randn(b, 2, h, w) * 0.01
    with torch.no_grad():
        ht, h1, h2, lt = model.native(im1, im2, ff, fb, train=False)
        assert ht.shape == h1.shape == h2.shape == (b, 3, 4 * h, 4 * w) and lt.shape == (b, 3, h, w)
        out = model.native(im1, im2, ff, fb, train=True)
    assert len(out) == 6
    for item in out[:4]:
        assert isinstance(item, list) and len(item) == 2  # [aux, final]
    assert torch.allclose(out[0][1], ht, atol=1e-5) and torch.allclose(out[3][1], lt, atol=1e-5)
    assert out[4].shape == out[5].shape == (b, 2, h, w)
    # the refinement adds the sigmoid U-Net output: strictly positive corrections (quirk 3)
    assert (out[4] > ff).all() and (out[5] > fb).all()


@pytest.mark.parametrize("n", [2, 3])
def test_contract_shapes_and_range(n: int):
    model = tiny().eval()
    x = torch.rand(2, n, 3, 16, 20)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 2 * n - 1, 3, 64, 80)
    assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1


@pytest.mark.parametrize("policy", ["left", "mean"])
def test_contract_is_sliding_pairs_with_the_key_frame_policy(policy: str):
    """Output = native pair calls on (k, k+1) with the provider's flows (-clip/150); key frames by the policy."""
    model = tiny(key_frames=policy).eval()
    x = torch.rand(1, 3, 3, 16, 16)
    with torch.no_grad():
        y = model(x)
        pairs = []
        for k in range(2):
            a, c = x[:, k], x[:, k + 1]
            ff = -model.flow_provider(a, c).clamp(-150, 150) / 150
            fb = -model.flow_provider(c, a).clamp(-150, 150) / 150
            pairs.append([denormalize(t) for t in model.native(normalize(a), normalize(c), ff, fb, False)])
    (t0, a0, b0, _), (t1, a1, b1, _) = pairs
    middle = a1 if policy == "left" else 0.5 * (a1 + b0)
    for i, frame in enumerate([a0, t0, middle, t1, b1]):
        assert torch.allclose(y[:, i], frame.clamp(0, 1), atol=1e-5), f"frame {i}"


def test_contract_input_errors():
    model = tiny().eval()
    with pytest.raises(ValueError, match="too small"):
        model(torch.rand(1, 2, 3, 4, 16))  # unet_depth 3 needs 8 px
    with pytest.raises(ValueError, match="at least 2"):
        model(torch.rand(1, 1, 3, 16, 16))
    assert tiny(unet_depth=5).min_size == 32


def test_train_mode_output_structure():
    model = tiny().train()
    x = torch.rand(2, 3, 3, 16, 16)
    out = model.supervised(x)
    assert isinstance(out, STARnetTrainOutput)
    assert torch.equal(model(x), out.frames)  # forward in train mode: the final predictions
    assert out.frames.shape == (2, 5, 3, 64, 64)
    assert len(out.ht) == 2 and out.ht[0].shape == (4, 3, 64, 64) and out.lt[1].shape == (4, 3, 16, 16)
    assert torch.allclose(out.frames[:, 1], denormalize(out.ht[1]).view(2, 2, 3, 64, 64)[:, 0])
    assert torch.allclose(out.frames[:, 4], denormalize(out.h2[1]).view(2, 2, 3, 64, 64)[:, 1])


# ------------------------------------------------------------------------------------------- flow
def test_flow_provider_sign_convention_on_a_shifted_image():
    """im1(p) = im2(p + d) by construction (integer crop offsets): the provider must return +d, (u, v) = (x, y)."""
    big = texture(80, 96, seed=3)
    dx, dy, y0, x0, h, w = 3, -2, 8, 8, 64, 64
    im2 = big[..., y0 : y0 + h, x0 : x0 + w]
    im1 = big[..., y0 + dy : y0 + dy + h, x0 + dx : x0 + dx + w]
    provider = DISFlow()
    assert isinstance(provider, FlowProvider)
    flow = provider(im1, im2)
    assert flow.shape == (1, 2, h, w) and flow.dtype == torch.float32
    inner = flow[..., 8:-8, 8:-8]
    assert abs(inner[:, 0].median().item() - dx) < 0.25 and abs(inner[:, 1].median().item() - dy) < 0.25
    back = provider(im2, im1)[..., 8:-8, 8:-8]
    assert abs(back[:, 0].median().item() + dx) < 0.25 and abs(back[:, 1].median().item() + dy) < 0.25
    # warping im2 by the flow reproduces im1 (independent check of the direction)
    gy, gx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    grid = torch.stack(((gx + flow[0, 0]) / (w - 1) * 2 - 1, (gy + flow[0, 1]) / (h - 1) * 2 - 1), -1)[None]
    warped = F.grid_sample(im2, grid, align_corners=True)
    assert (warped - im1)[..., 8:-8, 8:-8].abs().mean() < 0.2 * (im2 - im1)[..., 8:-8, 8:-8].abs().mean()


def test_network_flow_scaling():
    px = torch.tensor([-300.0, -150.0, -3.0, 0.0, 75.0, 1000.0])
    assert torch.allclose(to_network_flow(px), torch.tensor([1.0, 1.0, 0.02, 0.0, -0.5, -1.0]))
    assert torch.allclose(from_network_flow(to_network_flow(torch.tensor([-3.0, 12.5]))), torch.tensor([-3.0, 12.5]))
    model = tiny()
    a, c = texture(32, 32, 1), texture(32, 32, 2)
    ff, fb = model.network_flows(a, c)
    assert torch.allclose(ff, -model.flow_provider(a, c) / 150) and torch.allclose(fb, -model.flow_provider(c, a) / 150)


def test_flow_provider_is_replaceable():
    class Zero:
        def __call__(self, im1, im2):
            return im1.new_zeros(im1.shape[0], 2, *im1.shape[-2:])

    model = tiny().eval()
    model.flow_provider = Zero()
    with torch.no_grad():
        y = model(torch.rand(1, 2, 3, 16, 16))
    assert y.shape == (1, 3, 3, 64, 64)


# ------------------------------------------------------------------------------------------- loss
def test_training_loss_official_weighting():
    """Hand-written official sum: [0.4, 1.0] per list; I_t + 0.5 I_1 + 0.5 I_2 + LR I_t (normalised tensors)."""
    model = tiny(flow_loss_weight=0.0).train()
    x, gt = torch.rand(1, 2, 3, 16, 16), torch.rand(1, 3, 3, 64, 64)
    out = model.supervised(x)
    l1 = torch.nn.L1Loss()
    lr_target = F.interpolate(gt[:, 1], size=(16, 16), mode="bicubic", align_corners=False, antialias=True)
    targets = {"ht": gt[:, 1], "h1": gt[:, 0], "h2": gt[:, 2], "lt": lr_target}
    expected = 0.0
    for name, weight in (("ht", 1.0), ("h1", 0.5), ("h2", 0.5), ("lt", 1.0)):
        for stage, pred in zip((0.4, 1.0), getattr(out, name)):
            expected = expected + weight * stage * l1(pred, normalize(targets[name]))
    loss = model.supervised_loss(out, gt, l1, None)
    assert torch.allclose(loss, expected)
    # the flow term adds 0.1 * (MSE(ref_f, gt_f) + MSE(ref_b, gt_b)), non-negative
    model.flow_loss_weight = 0.1
    assert model.supervised_loss(out, gt, l1, None) > loss
    with pytest.raises(ValueError, match="GT has 5 frames"):
        model.supervised_loss(out, torch.rand(1, 5, 3, 64, 64), l1, None)


def test_a_few_training_steps_lower_the_loss(tmp_path):
    model = tiny().train()
    feature = VGGFeatureLoss(_vgg_file(tmp_path, "relu1_2"), layer="relu1_2")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    torch.manual_seed(0)
    gt = texture(64, 64, seed=5).expand(3, -1, -1, -1).clone()[None]  # (1, 3, 3, 64, 64), static scene
    gt[:, 1] = 0.5 * (gt[:, 0] + gt[:, 2])
    x = F.interpolate(gt[0, ::2], size=(16, 16), mode="bicubic", align_corners=False, antialias=True)[None]
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = model.training_objective(x, gt, torch.nn.L1Loss(), lambda a, b: 0.1 * feature(a, b))
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.7 * losses[0], losses
    assert model.model.RBPN.res_feat3[0].conv1.weight.grad is None  # quirk 5: never computed


# -------------------------------------------------------------------------------- perceptual loss
def _vgg_state(layer: str = "relu5_4", seed: int = 0, prefix: str = "features.") -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    from stvsr.train.perceptual import _features

    net = _features(vgg19_layer_names().index(layer))
    return {f"{prefix}{k}": v for k, v in net.state_dict().items()}


def _vgg_file(tmp_path: Path, layer: str = "relu5_4", **kwargs) -> Path:
    path = tmp_path / f"vgg19_{layer}.pth"
    torch.save(_vgg_state(layer, **kwargs), path)
    return path


def test_vgg_full_layout_round_trip(tmp_path):
    """torchvision layout: features[:36] ends at relu5_4, conv indices 0, 2, 5, ..., 34; classifier ignored."""
    state = _vgg_state("relu5_4")
    convs = sorted({int(k.split(".")[1]) for k in state})
    assert convs == [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
    state["classifier.0.weight"] = torch.zeros(2, 2)
    path = tmp_path / "vgg19-random.pth"
    torch.save(state, path)
    loss = VGGFeatureLoss(path)
    assert len(loss.features) == 36 and isinstance(loss.features[35], torch.nn.ReLU)
    assert torch.equal(loss.features[34].weight, state["features.34.weight"])
    assert not any(p.requires_grad for p in loss.parameters())


def test_vgg_loss_values_and_gradient(tmp_path):
    loss = VGGFeatureLoss(_vgg_file(tmp_path, "relu2_2"), layer="relu2_2")
    x = torch.rand(2, 3, 3, 24, 24)  # any leading dims
    assert loss(x, x.clone()).item() == 0.0
    y = x.clone().requires_grad_(True)
    value = loss(y, torch.rand_like(x))
    value.backward()
    assert value.item() > 0 and y.grad is not None and y.grad.abs().sum() > 0
    # ImageNet normalisation inside, MSE of features
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    a, b = x[0], torch.rand_like(x[0])
    manual = F.mse_loss(loss.features((a - mean) / std), loss.features((b - mean) / std))
    assert torch.allclose(loss(a, b), manual)
    # plain keys (no 'features.' prefix) load the same weights
    plain = tmp_path / "plain.pth"
    torch.save(_vgg_state("relu2_2", prefix=""), plain)
    assert torch.allclose(VGGFeatureLoss(plain, layer="relu2_2")(a, b), manual)


def test_vgg_loss_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="no VGG19 weights file given.*vgg19-dcbb9e9d.pth"):
        VGGFeatureLoss(None)
    missing = tmp_path / "nope" / "vgg19.pth"
    with pytest.raises(FileNotFoundError, match=r"not found: .*nope/vgg19.pth.*download"):
        VGGFeatureLoss(missing)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pth is not a readable PyTorch weights file"):
        VGGFeatureLoss(garbage)
    short = _vgg_file(tmp_path, "relu2_2")
    with pytest.raises(ValueError, match="is not a VGG19 state_dict .*missing features.10.weight"):
        VGGFeatureLoss(short)  # relu5_4 needs all 16 convs
    with pytest.raises(ValueError, match="unknown layer"):
        VGGFeatureLoss(short, layer="relu9_9")


# -------------------------------------------------------------------------------------------- configs
def test_configs_validate():
    from stvsr.train import options

    opt = options.load(REPO / "options" / "train" / "train_starnet_demo.yml")
    assert opt["network_G"]["which_model_G"] == "STARnet" and opt["datasets"]["train"]["N_frames"] == 3
    assert [entry["type"] for entry in opt["train"]["losses"]] == ["l1"]
    full = options.load(REPO / "options" / "train" / "train_starnet.yml")
    tr = full["train"]
    assert (tr["optim"], tr["lr_G"], tr["beta1"], tr["beta2"]) == ("Adamax", 1e-4, 0.9, 0.999)
    pixel, feature = tr["losses"]
    assert (pixel["type"], pixel["weight"], pixel["reduction"]) == ("l1", 1.0, "mean")
    assert (feature["type"], feature["weight"], feature["layer"]) == ("vgg19", 0.1, "relu5_4")
    assert feature["weights_path"].endswith("experiments/pretrained_models/vgg19-dcbb9e9d.pth")
    assert {k: full["network_G"][k] for k in OFFICIAL} == OFFICIAL
