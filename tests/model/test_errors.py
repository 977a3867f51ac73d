"""Bad input gets a clear error naming the file or argument and what was expected.

Every lddgan_core error is a ValueError subclass (CheckpointError, ConfigError, InputError); each test
checks the type and that the message names the culprit and the expectation.
"""
import copy
import json
import re

import pytest
import torch
from safetensors.torch import save_file

import lddgan_core as L
from lddgan_core.errors import CheckpointError, ConfigError, InputError


def esc(path) -> str:
    return re.escape(str(path))


@pytest.fixture
def cfg_dict(official_tiny):
    """A fresh copy of the fixture's official config.json."""
    return json.loads((official_tiny / "config.json").read_text())


def write_json(path, d):
    path.write_text(json.dumps(d))
    return path


def load_with_config(official_tiny, tmp_path, cfg):
    path = write_json(tmp_path / "config.json", cfg)
    return L.load_official(path, official_tiny / "netG.pth", official_tiny / "autoencoder.ckpt")


@pytest.fixture(scope="module")
def official_sds(official_tiny):
    """(generator state dict with module. keys, autoencoder lightning ckpt dict), as stored."""
    g = torch.load(official_tiny / "netG.pth", map_location="cpu", weights_only=True)
    a = torch.load(official_tiny / "autoencoder.ckpt", map_location="cpu", weights_only=True)
    return g, a


def test_errors_are_value_errors():
    for cls in (CheckpointError, ConfigError, InputError):
        assert issubclass(cls, ValueError) and issubclass(cls, L.LDDGANError)


# ------------------------------------------------------------------------------------------ file types
def test_png_as_generator(official_tiny, tmp_path):
    png = tmp_path / "photo.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.raises(CheckpointError, match=f"generator file '{esc(png)}' is not a checkpoint .*torch.save zip"):
        L.load_official(official_tiny / "config.json", png, official_tiny / "autoencoder.ckpt")


def test_text_as_autoencoder(official_tiny, tmp_path):
    txt = tmp_path / "notes.txt"
    txt.write_text("just some text\n")
    with pytest.raises(CheckpointError, match=f"autoencoder file '{esc(txt)}' is not a checkpoint .*safetensors"):
        L.load_official(official_tiny / "config.json", official_tiny / "netG.pth", txt)


def test_png_to_load(tmp_path):
    png = tmp_path / "photo.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.raises(CheckpointError, match=f"model file {esc(repr(str(png)))} is not a safetensors file"
                                              ".*LDDGAN .safetensors model"):
        L.load(png)


def test_official_pth_to_load_points_to_load_official(official_tiny):
    with pytest.raises(CheckpointError, match=f"{esc(official_tiny / 'netG.pth')}.*torch.save checkpoint.*"
                                              "load_official"):
        L.load(official_tiny / "netG.pth")


def test_foreign_safetensors_to_load(tmp_path):
    p = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(3)}, str(p), metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=f"{esc(p)}.*not an LDDGAN model.*(convert|load_official)"):
        L.load(p)


def test_our_model_file_as_generator(official_tiny, tiny_model, tmp_path):
    p = tiny_model.save(tmp_path / "m.safetensors")
    with pytest.raises(CheckpointError, match=f"generator file {esc(repr(p))}.*not an official LDDGAN generator"
                                              ".*lddgan_core.load"):
        L.load_official(official_tiny / "config.json", p, official_tiny / "autoencoder.ckpt")


# ------------------------------------------------------------------------------------------ truncated
def test_truncated_generator(official_tiny, tmp_path):
    data = (official_tiny / "netG.pth").read_bytes()
    p = tmp_path / "netG_half.pth"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"generator file '{esc(p)}' is truncated or corrupted"):
        L.load_official(official_tiny / "config.json", p, official_tiny / "autoencoder.ckpt")


def test_truncated_autoencoder(official_tiny, tmp_path):
    data = (official_tiny / "autoencoder.ckpt").read_bytes()
    p = tmp_path / "ae_half.ckpt"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"autoencoder file '{esc(p)}' is truncated or corrupted"):
        L.load_official(official_tiny / "config.json", official_tiny / "netG.pth", p)


def test_truncated_model_file(tiny_model, tmp_path):
    p = tiny_model.save(tmp_path / "m.safetensors")
    data = open(p, "rb").read()
    open(p, "wb").write(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"model file '{esc(p)}' is truncated: tensor data needs "
                                              f"{len(data)} bytes, file has {len(data) // 2}"):
        L.load(p)


# ------------------------------------------------------------------------------------------ wrong architecture
def test_generator_and_autoencoder_swapped(official_tiny):
    g, a = official_tiny / "netG.pth", official_tiny / "autoencoder.ckpt"
    with pytest.raises(CheckpointError, match=f"generator file {esc(repr(str(a)))}.*not an official LDDGAN "
                                              "generator.*looks like an autoencoder"):
        L.load_official(official_tiny / "config.json", a, g)


def test_generator_in_autoencoder_slot(official_tiny):
    g = official_tiny / "netG.pth"
    with pytest.raises(CheckpointError, match=f"autoencoder file {esc(repr(str(g)))}.*generator keys.*swapped"):
        L.load_official(official_tiny / "config.json", g, g)


@pytest.mark.parametrize("field,value,expect", [
    ("num_channels_dae", 16, r"shape mismatches \(\d+\): \['all_modules\.0\.weight: file \(48, 12\) vs config \(64, 16\)"),
    ("ch_mult", [1, 2, 2], r"shape mismatches \(\d+\).*missing keys \(\d+\): \['all_modules\.\d+\."),
    ("num_res_blocks", 2, r"shape mismatches \(\d+\).*missing keys \(\d+\)"),
    ("ch_mult", [2], r"unexpected keys \(\d+\): \['all_modules\.\d+\."),
])
def test_generator_config_of_other_architecture(official_tiny, tmp_path, cfg_dict, field, value, expect):
    cfg_dict["generator"][field] = value
    g = official_tiny / "netG.pth"
    with pytest.raises(CheckpointError, match=f"generator file {esc(repr(str(g)))} does not match the configured "
                                              f"architecture: .*{expect}"):
        load_with_config(official_tiny, tmp_path, cfg_dict)


def test_autoencoder_extra_key_listed(official_tiny, tmp_path, official_sds):
    ck = copy.copy(official_sds[1])
    ck["state_dict"] = dict(ck["state_dict"], **{"encoder.extra_block.weight": torch.zeros(3)})
    p = tmp_path / "ae_extra.ckpt"
    torch.save(ck, p)
    with pytest.raises(CheckpointError, match=f"autoencoder file {esc(repr(str(p)))} does not match the configured "
                                              r"architecture: unexpected keys \(1\): \['encoder\.extra_block\.weight'\]"):
        L.load_official(official_tiny / "config.json", official_tiny / "netG.pth", p)


def test_autoencoder_missing_key_listed(official_tiny, tmp_path, official_sds):
    ck = copy.copy(official_sds[1])
    ck["state_dict"] = {k: v for k, v in ck["state_dict"].items() if k != "decoder.conv_out.bias"}
    p = tmp_path / "ae_missing.ckpt"
    torch.save(ck, p)
    with pytest.raises(CheckpointError, match=f"autoencoder file {esc(repr(str(p)))}.*"
                                              r"missing keys \(1\): \['decoder\.conv_out\.bias'\]"):
        L.load_official(official_tiny / "config.json", official_tiny / "netG.pth", p)


def test_generator_missing_key_listed(official_tiny, tmp_path, official_sds):
    sd = {k: v for k, v in official_sds[0].items() if k != "module.all_modules.18.bias"}
    p = tmp_path / "netG_missing.pth"
    torch.save(sd, p)
    with pytest.raises(CheckpointError, match=f"generator file {esc(repr(str(p)))}.*"
                                              r"missing keys \(1\): \['all_modules\.18\.bias'\]"):
        L.load_official(official_tiny / "config.json", p, official_tiny / "autoencoder.ckpt")


# ------------------------------------------------------------------------------------------ config vs weights
def test_nz_contradicts_checkpoint(official_tiny, tmp_path, cfg_dict):
    cfg_dict["generator"]["nz"] = 10
    with pytest.raises(CheckpointError, match=f"{esc(official_tiny / 'netG.pth')}.*config says nz=10 but the "
                                              "checkpoint's z_transform has nz=8"):
        load_with_config(official_tiny, tmp_path, cfg_dict)


def test_official_config_missing_required_field(official_tiny, tmp_path, cfg_dict):
    del cfg_dict["generator"]["num_channels_dae"]
    with pytest.raises(ConfigError, match=f"official config {esc(repr(str(tmp_path / 'config.json')))}: "
                                          r"generator section lacks \['num_channels_dae'\]"):
        load_with_config(official_tiny, tmp_path, cfg_dict)


def test_official_config_missing_scale_factor(official_tiny, tmp_path, cfg_dict):
    del cfg_dict["scale_factor"]
    with pytest.raises(ConfigError, match=f"{esc(tmp_path / 'config.json')}.*scale_factor is missing"):
        load_with_config(official_tiny, tmp_path, cfg_dict)


def test_model_config_missing_field(tiny_model):
    d = tiny_model.config.to_dict()
    del d["scale_factor"]
    with pytest.raises(ConfigError, match="model config: missing field 'scale_factor'"):
        L.ModelConfig.from_dict(d)
    d = tiny_model.config.to_dict()
    del d["generator"]["in_channels"]
    with pytest.raises(ConfigError, match=r"generator config: missing required field\(s\) \['in_channels'\]"):
        L.ModelConfig.from_dict(d)


def test_model_config_unknown_field(tiny_model):
    d = tiny_model.config.to_dict()
    d["sampler"] = "ddim"
    with pytest.raises(ConfigError, match=r"model config: unknown field\(s\) \['sampler'\]"):
        L.ModelConfig.from_dict(d)
    d = tiny_model.config.to_dict()
    d["autoencoder"]["channels"] = 7
    with pytest.raises(ConfigError, match=r"autoencoder config: unknown field\(s\) \['channels'\]; known fields "
                                          r"are \[.*'ch'"):
        L.ModelConfig.from_dict(d)


def test_downsample_factor_contradicts_ch_mult(official_tiny, tmp_path, cfg_dict):
    cfg_dict["autoencoder"]["downsample_factor"] = 4
    with pytest.raises(ConfigError, match=r"autoencoder\.downsample_factor 4 contradicts ch_mult \[1, 2\] "
                                          r"\(factor 2\)"):
        load_with_config(official_tiny, tmp_path, cfg_dict)


def test_generator_image_size_contradicts_image_size(official_tiny, tmp_path, cfg_dict):
    cfg_dict["generator"]["image_size"] = 4  # image_size 16 / factor 2 = 8
    with pytest.raises(ConfigError, match=f"{esc(tmp_path / 'config.json')}.*image_size 16 with autoencoder "
                                          "factor 2 gives latents of 8 px, but generator.image_size is 4"):
        load_with_config(official_tiny, tmp_path, cfg_dict)


def test_nz_and_n_mlp_inferred_from_checkpoint(official_tiny, tmp_path, cfg_dict):
    del cfg_dict["generator"]["nz"], cfg_dict["generator"]["n_mlp"]
    m = load_with_config(official_tiny, tmp_path, cfg_dict)
    assert (m.config.generator.nz, m.config.generator.n_mlp, m.config.generator.z_emb_dim) == (8, 2, 16)


# ------------------------------------------------------------------------------------------ accepted layouts
def _assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_generator_without_ddp_prefix_loads(official_tiny, tiny_model, tmp_path, official_sds):
    sd = {k[len("module."):]: v for k, v in official_sds[0].items()}
    assert not any(k.startswith("module.") for k in sd)
    p = tmp_path / "netG_plain.pth"
    torch.save(sd, p)
    m = L.load_official(official_tiny / "config.json", p, official_tiny / "autoencoder.ckpt")
    _assert_same_weights(m, tiny_model)


def test_autoencoder_inside_latent_diffusion_ckpt_loads(official_tiny, tiny_model, tmp_path, official_sds):
    ae = {k: v for k, v in official_sds[1]["state_dict"].items() if not k.startswith("loss.")}
    sd = {f"first_stage_model.{k}": v for k, v in ae.items()}
    sd.update({
        "model.diffusion_model.input_blocks.0.0.weight": torch.randn(8, 4, 3, 3),
        "model.diffusion_model.out.2.bias": torch.randn(4),
        "model_ema.decay": torch.tensor(0.9999),
        "model_ema.num_updates": torch.tensor(10, dtype=torch.int64),
        "model_ema.diffusion_modelinput_blocks00weight": torch.randn(8, 4, 3, 3),
        "betas": torch.linspace(1e-4, 2e-2, 10), "alphas_cumprod": torch.linspace(1, 0.1, 10),
        "scale_factor": torch.tensor(0.18215),
    })
    p = tmp_path / "ldm.ckpt"
    torch.save({"state_dict": sd, "global_step": 5}, p)
    m = L.load_official(official_tiny / "config.json", official_tiny / "netG.pth", p)
    _assert_same_weights(m, tiny_model)


# ------------------------------------------------------------------------------------------ tensor inputs
IMG_SHAPE = r"images: expected a tensor \[B, 3, H, W\] in \[-1, 1\], got "


@pytest.mark.parametrize("shape,expect", [
    ((3, 16, 16), IMG_SHAPE + r"\(3, 16, 16\)"),
    ((2, 4, 16, 16), IMG_SHAPE + r"\(2, 4, 16, 16\)"),
    ((2, 3, 15, 16), r"images: height and width must be multiples of the autoencoder's downsampling factor 2, "
                     r"got \(15, 16\)"),
])
def test_encode_wrong_shape(tiny_model, shape, expect):
    with pytest.raises(InputError, match=expect):
        tiny_model.encode(torch.zeros(shape))


def test_encode_rejects_0_255_images(tiny_model):
    img = torch.full((1, 3, 16, 16), 200.0)
    with pytest.raises(InputError, match=r"images: values must lie in \[-1, 1\], got min 200, max 200 .*0\.\.255"):
        tiny_model.encode(img)


def test_encode_rejects_non_tensor(tiny_model):
    with pytest.raises(InputError, match=r"images: expected a tensor .* got list"):
        tiny_model.encode([[0.0]])


def test_decode_wrong_channels(tiny_model):
    with pytest.raises(InputError, match=r"latents: expected a tensor \[B, 4, h, w\] in the autoencoder's latent "
                                         r"space, got \(2, 3, 8, 8\)"):
        tiny_model.decode(torch.zeros(2, 3, 8, 8))


def _gen_args(B=2, C=4, nz=8):
    return torch.zeros(B, C, 8, 8), torch.zeros(B, dtype=torch.int64), torch.zeros(B, nz)


def test_generator_x_t_wrong_channels(tiny_model):
    x, t, z = _gen_args(C=3)
    with pytest.raises(InputError, match=r"generator x_t: expected \[B, 4, H, W\], got \(2, 3, 8, 8\)"):
        tiny_model.generator(x, t, z)


def test_generator_x_t_not_divisible(tiny_model):
    x, t, z = _gen_args()
    with pytest.raises(InputError, match=r"generator x_t: height and width must be multiples of 2, got \(7, 7\)"):
        tiny_model.generator(x[:, :, :7, :7], t, z)


def test_generator_float_t(tiny_model):
    x, t, z = _gen_args()
    with pytest.raises(InputError, match=r"generator t: expected an integer step index tensor of shape \[2\], "
                                         r"got \(\(2,\), torch.float32\)"):
        tiny_model.generator(x, t.float(), z)


def test_generator_t_wrong_length(tiny_model):
    x, t, z = _gen_args()
    with pytest.raises(InputError, match=r"generator t: expected .* shape \[2\], got \(\(3,\), torch.int64\)"):
        tiny_model.generator(x, torch.zeros(3, dtype=torch.int64), z)


def test_generator_z_wrong_shape(tiny_model):
    x, t, z = _gen_args(nz=7)
    with pytest.raises(InputError, match=r"generator z: expected \[2, 8\], got \(2, 7\)"):
        tiny_model.generator(x, t, z)


def test_sample_seeds_wrong_length(tiny_model):
    with pytest.raises(InputError, match=r"sample: batch_size=2 contradicts the batch of 3 given by seeds"):
        tiny_model.sample(batch_size=2, seeds=[1, 2, 3])
    x_T = torch.zeros(2, 4, 8, 8)
    with pytest.raises(InputError, match=r"sample: 3 seeds given for a batch of 2"):
        tiny_model.sample(x_T=x_T, seeds=[1, 2, 3])


def test_sample_x_T_wrong_shape(tiny_model):
    with pytest.raises(InputError, match=r"sample x_T: expected shape \(2, 4, 8, 8\), got \(2, 3, 8, 8\)"):
        tiny_model.sample(x_T=torch.zeros(2, 3, 8, 8), seeds=[0, 1])


def test_sample_step_z_wrong_shape(tiny_model):
    with pytest.raises(InputError, match=r"sample step_z: expected \[4, 2, 8\], got \[4, 2, 7\]"):
        tiny_model.sample(x_T=torch.zeros(2, 4, 8, 8), step_z=torch.zeros(4, 2, 7),
                          step_noise=torch.zeros(4, 2, 4, 8, 8))


def test_sample_without_any_source(tiny_model):
    with pytest.raises(InputError, match="sample: give batch_size with seed, seeds, x_T, or init_latent"):
        tiny_model.sample()
    with pytest.raises(InputError, match="sample: give seeds \\(or seed\\), or all of x_T, step_z and step_noise"):
        tiny_model.sample(batch_size=1)


@pytest.mark.parametrize("denoise", [1.5, -0.1])
def test_sample_denoise_out_of_range(tiny_model, denoise):
    with pytest.raises(InputError, match=rf"denoise must be in \[0, 1\], got {denoise}"):
        tiny_model.sample(init_latent=torch.zeros(1, 4, 8, 8), seed=0, denoise=denoise)
    with pytest.raises(InputError, match=rf"denoise must be in \[0, 1\], got {denoise}"):
        tiny_model.sample(batch_size=1, seed=0, denoise=denoise)


@pytest.mark.parametrize("start", [5, -1])
def test_sample_start_step_out_of_range(tiny_model, start):
    with pytest.raises(InputError, match=rf"sample: start_step must be in 0\.\.4, got {start}"):
        tiny_model.sample(batch_size=1, seed=0, start_step=start)


def test_sample_init_latent_wrong_channels(tiny_model):
    with pytest.raises(InputError, match=r"init_latent: expected a tensor \[B, 4, h, w\]"):
        tiny_model.sample(init_latent=torch.zeros(1, 3, 8, 8), seed=0, denoise=0.5)


def test_save_bad_dtype(tiny_model, tmp_path):
    with pytest.raises(ConfigError, match="dtype must be one of fp32, fp16, bf16, got 'int8'"):
        tiny_model.save(tmp_path / "m.safetensors", dtype="int8")
    assert not list(tmp_path.iterdir())


def test_decode_rejects_non_tensor(tiny_model):
    with pytest.raises(InputError, match=r"latents: expected a tensor \[B, 4, h, w\] .* got list"):
        tiny_model.decode([[0.0] * 8] * 8)
