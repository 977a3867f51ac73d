"""The emoji data: the catalog (emoji-test.txt x what Noto Color Emoji draws), its options and fixed split, the
rendering (deterministic, centred on white, correctly composited), provenance, and the errors for missing files
and bad arguments. Tests that render need Debian's fonts-noto-color-emoji and unicode-data (.ci/run installs
them); they are skipped, saying so, only where those files are absent."""
import hashlib
import json
import os

import numpy as np
import pytest
import torch

from lddgan_core.data import emoji as E
from lddgan_core.errors import InputError


from emoji_util import needs_sources  # noqa: E402

GRINNING, THUMBS_UP, FRANCE = "\U0001F600", "\U0001F44D", "\U0001F1EB\U0001F1F7"
FAMILY = "\U0001F468\u200D\U0001F469\u200D\U0001F467"  # man, woman, girl: a ZWJ sequence drawn as one glyph
TONES = [chr(c) for c in range(0x1F3FB, 0x1F400)]


@pytest.fixture(scope="module")
def full():
    return E.load_catalog(skin_tones=True, country_flags=True)


@pytest.fixture(scope="module")
def default():
    return E.load_catalog()


def _file_lines():
    with open(E.emoji_test_path(), encoding="utf-8") as f:
        return f.read().splitlines()


# --- the catalog --------------------------------------------------------------------------------------------

@needs_sources
def test_catalog_matches_the_file(full):
    lines = _file_lines()
    fully = [ln for ln in lines if not ln.startswith("#") and "; fully-qualified" in ln]
    assert 3000 <= len(fully) <= 6000  # 3,655 in Emoji 15.0
    assert len(full) <= len(fully) and len(full) >= 0.95 * len(fully)  # the font draws (nearly) all of them
    file_groups = [ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("# group:")]
    assert list(E.group_names()) == [g for g in file_groups if g != "Component"]  # Component: no emoji of its own
    assert "Smileys & Emotion" in E.group_names() and "Flags" in E.group_names()
    groups, subgroups = E.group_names(), E.subgroup_names()
    for e in full:
        assert groups[e.group_index] == e.group and subgroups[e.subgroup_index] == e.subgroup
        assert e.split in E.SPLITS
    # file order, and the code points as the file writes them
    first = full[0]
    assert (first.codepoints, first.name, first.group, first.subgroup) == (
        "1F600", "grinning face", "Smileys & Emotion", "face-smiling")
    assert first.sequence == GRINNING and first.group_index == 0 and first.subgroup_index == 0
    assert [e.group_index for e in full] == sorted(e.group_index for e in full)


@needs_sources
def test_exact_duplicate_glyphs_are_dropped_so_no_picture_is_on_both_sides(full):
    names = {e.name for e in full}
    # Noto 2.042 draws "family: man, man, boy" with the glyph of "family" (which comes first): one picture, kept once
    assert "family" in names and "family: man, man, boy" not in names
    font = E._font()[0]
    inks = {}
    for e in full:
        inks.setdefault(E._ink_image(font, e.sequence), []).append(e.name)
    assert [v for v in inks.values() if len(v) > 1] == []  # every kept emoji has a glyph of its own


@needs_sources
def test_options_change_the_counts_as_documented(full, default):
    tones = [e for e in full if e.has_skin_tone]
    flags = [e for e in full if e.subgroup in ("country-flag", "subdivision-flag")]
    assert 1500 <= len(tones) <= 2200 and 240 <= len(flags) <= 280  # 1,780 and 253 in Emoji 15.0 (Noto 2.042)
    assert all(any(t in e.sequence for t in TONES) for e in tones)
    only_tones = E.load_catalog(skin_tones=True)
    only_flags = E.load_catalog(country_flags=True)
    assert len(default) == len(full) - len(tones) - len(flags)
    assert len(only_tones) == len(default) + len(tones) and len(only_flags) == len(default) + len(flags)
    assert not any(e.has_skin_tone or e.is_country_flag for e in default)
    # the other flags stay; options only filter, in file order
    assert {e.name for e in default if e.group == "Flags"} >= {"chequered flag", "rainbow flag", "pirate flag"}
    pos = {e: i for i, e in enumerate(full)}
    assert [pos[e] for e in default] == sorted(pos[e] for e in default)
    with pytest.raises(InputError, match="skin_tones"):
        E.load_catalog(skin_tones="yes")


@needs_sources
def test_the_font_test_drops_what_it_cannot_draw(tmp_path):
    # an emoji list with entries the font cannot draw as one glyph of their own
    text = "\n".join([
        "# emoji-test.txt", "# Date: 2099-01-01, 00:00:00 GMT", "# Version: 99.0", "",
        "# group: Smileys & Emotion", "# subgroup: face-smiling",
        "1F600 ; fully-qualified # \U0001F600 E1.0 grinning face",
        "263A ; unqualified # \u263A E0.6 smiling face",
        "1F44D 200D 1F525 ; fully-qualified # x E99.0 thumbs on fire",  # unknown ZWJ: two glyphs
        "1F34E 1F3FD ; fully-qualified # x E99.0 apple: medium skin tone",  # no such modifier sequence
        "# group: Component", "# subgroup: skin-tone",
        "1F3FB ; component # \U0001F3FB E1.0 light skin tone",
        "# group: Flags", "# subgroup: country-flag",
        "1F1EB 1F1F7 ; fully-qualified # x E2.0 flag: France",
        "1F1FF 1F1FF ; fully-qualified # x E99.0 flag: ZZ",  # user-assigned code: the font's '?' flag
        "# subgroup: subdivision-flag",
        "1F3F4 E0067 E0062 E007A E007A E007A E007F ; fully-qualified # x E99.0 flag: nowhere",  # bare black flag
        "", "#EOF", ""])
    path = tmp_path / "emoji-test.txt"
    path.write_text(text, encoding="utf-8")
    cat = E.load_catalog(emoji_test=path, country_flags=True)
    assert [e.name for e in cat] == ["grinning face", "flag: France"]
    assert E.group_names(path) == ("Smileys & Emotion", "Flags")
    assert E.subgroup_names(path) == ("face-smiling", "country-flag", "subdivision-flag")
    assert [(e.group_index, e.subgroup_index) for e in cat] == [(0, 0), (1, 1)]
    info = E.source_info(emoji_test=path)
    assert (info["emoji_test_version"], info["emoji_test_date"]) == ("99.0", "2099-01-01, 00:00:00 GMT")
    assert info["emoji_test_package"] == ""  # not a file of Debian's unicode-data
    # a malformed line names the file and the line
    path.write_text(text.replace("1F600 ; fully", "1F600 fully"), encoding="utf-8")
    with pytest.raises(InputError, match=r"emoji-test\.txt:7"):
        E.load_catalog(emoji_test=path)


# --- the split ----------------------------------------------------------------------------------------------

def _rule(seq: str) -> str:  # the documented rule, written out again
    key = " ".join(f"{ord(c):X}" for c in seq if not 0x1F3FB <= ord(c) <= 0x1F3FF and c != "\uFE0F")
    h = int.from_bytes(hashlib.sha256(("lddgan-emoji-split:" + key).encode()).digest()[:8], "big")
    return "heldout" if h < int(0.15 * 2 ** 64) else "train"


def test_split_is_the_documented_rule():
    expected = {GRINNING: "train", THUMBS_UP: "heldout", FRANCE: "train", "\u2764\uFE0F": "train"}
    for seq, split in expected.items():  # stored: a change here moves emoji between train and held-out
        assert E.split_of(seq) == split == _rule(seq)
    for t in TONES:  # the tones of an emoji go with it, so held-out emoji do not leak into training recoloured
        assert E.split_of(THUMBS_UP + t) == "heldout"
    assert E.split_of("\u263A\uFE0F") == E.split_of("\u263A")
    with pytest.raises(InputError, match="sequence"):
        E.split_of("")


@needs_sources
def test_split_ratio_and_stability(full, default):
    for cat in (full, default):
        frac = sum(e.split == "heldout" for e in cat) / len(cat)
        assert 0.12 <= frac <= 0.18, frac
    assert all(e.split == _rule(e.sequence) for e in full)
    by_seq = {e.sequence: e.split for e in full}
    assert all(by_seq[e.sequence] == e.split for e in default)  # filtering does not move an emoji


# --- rendering ----------------------------------------------------------------------------------------------

@needs_sources
@pytest.mark.parametrize("seq", [GRINNING, THUMBS_UP, FRANCE, FAMILY])
def test_render_is_deterministic_centred_on_white(seq):
    a = E.render(seq, 64)
    assert a.dtype == torch.uint8 and a.shape == (3, 64, 64)
    assert torch.equal(a, E.render(seq, 64))
    x = a.double()
    ink = (255 - x.min(0).values)  # how far from white, per pixel
    assert (ink > 60).sum() > 0.25 * 64 * 64, "the glyph should fill a good part of the image"
    for corner in (x[:, :2, :2], x[:, :2, -2:], x[:, -2:, :2], x[:, -2:, -2:]):
        assert (corner == 255).all(), "white background at the corners"
    ys, xs = (ink > 8).nonzero(as_tuple=True)
    assert abs((ys.min() + ys.max()) / 2 - 31.5) <= 1.5 and abs((xs.min() + xs.max()) / 2 - 31.5) <= 1.5
    if seq in (GRINNING, FRANCE):  # symmetric glyphs: the colour mass is centred too (a thumb's is not)
        w = ink / ink.sum()
        grid = torch.arange(64, dtype=torch.float64)
        cy, cx = float((w.sum(1) * grid).sum()), float((w.sum(0) * grid).sum())
        assert abs(cy - 31.5) < 2 and abs(cx - 31.5) < 2, (cy, cx)


@needs_sources
def test_render_colours_and_sizes():
    face = E.render(GRINNING, 64).double()
    inside = face[:, 16:48, 16:48].reshape(3, -1).mean(1)  # mostly the yellow face
    assert inside[0] > 180 and inside[1] > 140 and inside[2] < 110, inside.tolist()
    for size in (48, 32):
        small = E.render(GRINNING, size)
        assert small.shape == (3, size, size) and (small[:, 0, 0] == 255).all()
        # the same picture, smaller: close to the 64 px one downsampled
        ref = torch.nn.functional.interpolate(face[None], size=(size, size), mode="area")[0]
        assert (small.double() - ref).abs().mean() < 12


@needs_sources
def test_edges_are_composited_on_white_not_darkened():
    # The glyph's anti-aliased edge must be its colour blended with white. Drawn on a transparent canvas, Pillow
    # leaves colour x alpha, so "premultiplied + (255 - alpha)" is the exact composite to compare against; the
    # naive alpha_composite of that canvas applies alpha twice and darkens the edge.
    from PIL import Image

    font = E._font()[0]
    t = E._on_transparent(font, GRINNING)
    rgba = np.asarray(t).astype(np.int64)
    alpha = rgba[..., 3:]
    exact = rgba[..., :3] + (255 - alpha)
    ours = np.asarray(E._draw(font, GRINNING, t.size, (0, 0), E.BACKGROUND + (255,)).convert("RGB")).astype(np.int64)
    edge = ((alpha > 0) & (alpha < 255))[..., 0]
    assert edge.sum() > 100
    assert np.abs(ours - exact).max() <= 2
    naive = np.asarray(Image.alpha_composite(Image.new("RGBA", t.size, (255, 255, 255, 255)), t).convert("RGB"))
    assert (exact[edge] - naive[edge].astype(np.int64)).mean() > 10  # what the comment in _render_one warns of


@needs_sources
def test_make_emoji_labels_and_layout(default):
    small = [e for e in default if e.split == "train"][:5] + [e for e in default if e.split == "heldout"][:3]
    x, lab = E.make_emoji("train", 32, small)
    assert x.dtype == torch.uint8 and x.shape == (5, 3, 32, 32)
    assert lab["index"].tolist() == [0, 1, 2, 3, 4] and set(lab) == {"group", "subgroup", "index"}
    assert all(v.dtype == torch.int64 for v in lab.values())
    assert lab["group"].tolist() == [e.group_index for e in small[:5]]
    assert lab["subgroup"].tolist() == [e.subgroup_index for e in small[:5]]
    h, hl = E.make_emoji("heldout", 32, small)
    assert h.shape[0] == 3 and hl["index"].tolist() == [5, 6, 7]
    a, _ = E.make_emoji("all", 32, small)
    assert torch.equal(a, torch.cat([x, h]))  # catalog order
    assert torch.equal(a[0], E.render(small[0].sequence, 32))
    y = E.to_model_range(x)
    assert y.dtype == torch.float32 and y.min() >= -1 and y.max() == 1  # white background -> 1


@needs_sources
def test_save_folder_writes_pngs(tmp_path, default):
    from PIL import Image

    small = default[:3]
    E.save_folder(tmp_path / "out", "all", 32, small)
    names = sorted(os.path.relpath(os.path.join(r, f), tmp_path / "out")
                   for r, _, fs in os.walk(tmp_path / "out") for f in fs)
    assert names == [f"smileys_emotion/{i:04d}_{e.codepoints}.png" for i, e in enumerate(small)]
    x, _ = E.make_emoji("all", 32, small)
    back = np.asarray(Image.open(tmp_path / "out" / names[0]).convert("RGB"))
    assert np.array_equal(back, x[0].permute(1, 2, 0).numpy())


@needs_sources
def test_source_info_records_provenance():
    info = E.source_info()
    json.dumps(info)  # storable in a model's provenance as is
    assert len(info["font_sha256"]) == 64 and len(info["emoji_test_sha256"]) == 64
    assert info["font_version"].startswith("Version ")
    header = {ln[2:].split(":", 1)[0]: ln.split(":", 1)[1].strip() for ln in _file_lines()[:12]
              if ln.startswith(("# Version:", "# Date:"))}
    assert info["emoji_test_version"] == header["Version"] and info["emoji_test_date"] == header["Date"]
    if os.path.realpath(info["font_path"]) == os.path.realpath(E.DEFAULT_FONT) and os.path.exists("/var/lib/dpkg"):
        assert info["font_package"].startswith("fonts-noto-color-emoji ")
    assert info["render_version"] == E.RENDER_VERSION and info["skin_tones"] is False
    assert E.source_info(skin_tones=True)["skin_tones"] is True


@needs_sources
def test_cli_info(capsys):
    assert E._main(["--info"]) == 0
    assert json.loads(capsys.readouterr().out)["dataset"] == "emoji"
    assert E._main(["--grid", "unused.png", "--size", "0"]) == 2 and "size" in capsys.readouterr().out


# --- errors -------------------------------------------------------------------------------------------------

def test_missing_files_name_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.delenv(E.FONT_ENV, raising=False)
    monkeypatch.delenv(E.EMOJI_TEST_ENV, raising=False)
    with pytest.raises(InputError, match=r"apt-get install fonts-noto-color-emoji") as e:
        E.font_path(tmp_path / "none.ttf")
    assert "none.ttf" in str(e.value) and "LDDGAN_EMOJI_FONT" in str(e.value)
    with pytest.raises(InputError, match=r"apt-get install unicode-data"):
        E.emoji_test_path(tmp_path / "none.txt")
    with pytest.raises(InputError, match="fonts-noto-color-emoji"):
        E.load_catalog(font=tmp_path / "none.ttf")
    with pytest.raises(InputError, match="fonts-noto-color-emoji"):
        E.make_emoji("train", 64, font=tmp_path / "none.ttf", catalog=[])
    # the environment variables override the Debian paths, and are named when they point nowhere
    monkeypatch.setenv(E.FONT_ENV, str(tmp_path / "env.ttf"))
    monkeypatch.setenv(E.EMOJI_TEST_ENV, str(tmp_path / "env.txt"))
    with pytest.raises(InputError, match=r"env\.ttf.*\$LDDGAN_EMOJI_FONT"):
        E.font_path()
    with pytest.raises(InputError, match=r"env\.txt.*\$LDDGAN_EMOJI_TEST"):
        E.emoji_test_path()
    good = tmp_path / "emoji-test.txt"
    good.write_text("# group: Activities\n", encoding="utf-8")
    monkeypatch.setenv(E.EMOJI_TEST_ENV, str(good))
    assert E.emoji_test_path() == str(good)
    with pytest.raises(InputError, match="no fully-qualified"):
        E.group_names()


@needs_sources
def test_missing_emoji_list_with_the_font_present(tmp_path):
    with pytest.raises(InputError, match="unicode-data"):
        E.load_catalog(emoji_test=tmp_path / "none.txt")
    not_a_font = tmp_path / "font.ttf"
    not_a_font.write_bytes(b"not a font")
    with pytest.raises(InputError, match="cannot be opened as a font"):
        E.load_catalog(font=not_a_font)


def test_argument_validation():
    for size in (0, 7, 257, 64.0, True, "64", None):
        with pytest.raises(InputError, match="size"):
            E.make_emoji("train", size, catalog=[])
        with pytest.raises(InputError, match="size"):
            E.render(GRINNING, size)
    for split in ("val", "Train", None):
        with pytest.raises(InputError, match="split"):
            E.make_emoji(split, 64, catalog=[])
    with pytest.raises(InputError, match="catalog"):
        E.make_emoji("train", 64, catalog=["\U0001F600"])
    with pytest.raises(InputError, match="sequence"):
        E.render("", 64)
    with pytest.raises(InputError, match="country_flags"):
        E.source_info(country_flags=1)
