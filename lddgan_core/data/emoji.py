"""Emoji pictures with known classes: Noto Color Emoji glyphs rendered offline, labelled by Unicode's groups.

Each image is one emoji, centred on a plain white background, at 64x64 (48 and 32 also make sense; any size in
8..256 is accepted). The labels are the emoji's group (9 in Emoji 15.0, e.g. "Smileys & Emotion"; the file's
tenth, "Component", holds no emoji of its own) and subgroup (99, e.g. "face-smiling") from Unicode's
emoji-test.txt. Nothing is downloaded: the two sources are Debian packages (other installs can point at
their own copies):

  font         fonts-noto-color-emoji  /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf   (SIL OFL 1.1)
               or $LDDGAN_EMOJI_FONT or the ``font`` argument
  emoji list   unicode-data            /usr/share/unicode/emoji/emoji-test.txt             (Unicode license)
               or $LDDGAN_EMOJI_TEST or the ``emoji_test`` argument

    from lddgan_core.data.emoji import load_catalog, make_emoji
    images, labels = make_emoji("train", size=64)   # uint8 [N, 3, 64, 64], {"group", "subgroup", "index"}: int64 [N]
    catalog = load_catalog()                          # labels["index"][i] -> catalog[i].name, .sequence, ...

What is in it: ``python -m lddgan_core.data.emoji --stats`` prints these figures (~30 s). Measured with
fonts-noto-color-emoji 2.042-0+deb12u1, unicode-data 15.0.0-1 (emoji-test.txt Version 15.0), Pillow 13.0.0;
distances are RMS over pixels and channels in [0, 1] at 64 px.

  * emoji-test.txt lists 3,655 "fully-qualified" emoji (the other statuses are the same emoji written without
    their variation selectors, or lone components). This font draws all 3,655 as one glyph each (the test is
    below), so none is dropped for want of a glyph; an older font or a newer list would lose some. 14 are
    exact duplicates of an earlier emoji's glyph and are dropped (five snowboarder skin tones, which Noto draws
    without a tone; "family: man, man, boy", drawn as "family"; eight territories that fly their country's
    flag): 3,641 remain. Kept, "family: man, man, boy" would have put the training image "family" into the
    held-out split.
  * Skin tones: 1,780 of them (49 %) carry a skin-tone modifier (U+1F3FB..U+1F3FF), recolourings of 1,861
    base emoji. A variant is 0.121 from its base (yellow) emoji on average (0.116 from the other tones of the
    same emoji), while the median distance from a base emoji to its nearest other emoji is 0.172: 87 % of the
    variants are closer to their base than that, and for 90 % the base is the nearest of all 1,861 base emoji.
    They are near-duplicates that differ only in skin colour, and with them "People & Body" would be 2,142 of
    3,641 images. By default (``skin_tones=False``) only the base emoji is kept, so a model does not spend its
    capacity on recolourings and the groups stay balanced.
  * Flags: 250 country flags and 3 subdivision flags (England, Scotland, Wales). Among the base emoji they
    would be the largest subgroup by far (250; the next, person-role, holds 82) and 253 of 1,861 images
    (14 %). They are one silhouette in 253 colourings: the median intersection-over-union of a flag's shape
    with its nearest neighbour's is 0.991 (0.861 for the other emoji); their colours do differ (nearest-
    neighbour distance 0.191, other emoji 0.170), so they are not duplicates, but a flag is only right with its
    exact stripes and crest, a different task from faces, animals and objects. By default
    (``country_flags=False``) they are left out; the 8 other flags (chequered, triangular, crossed, black,
    white, rainbow, transgender, pirate) stay.
  * The default catalog is 1,608 emoji in 9 groups (People & Body 362, Objects 261, Symbols 223, Travel &
    Places 218, Smileys & Emotion 166, Animals & Nature 152, Food & Drink 133, Activities 85, Flags 8) and 97
    subgroups: 1,370 train and 238 held out. Building the catalog takes ~2 s and rendering the train split at
    64 px ~3.5 s on one CPU core, so there is no disk cache: images are rendered when asked for.

Rendering: the font is a CBDT colour-bitmap font whose only strike is 109 px (glyph cells of 136x128 pixels),
so it is opened at that size and the bitmap is used unscaled. Text layout goes through libraqm (HarfBuzz),
which is what turns a sequence (a ZWJ family, a flag's two regional indicators, a keycap) into its single
glyph; it is required, because Pillow's basic layout would draw those as several glyphs. The ink (the alpha
channel's bounding box) is centred in a 144x144 white canvas (glyph cells are 136x128, so there is a margin
of at least 4 px), and the canvas is resized to ``size`` with Lanczos filtering.

Which emoji the font draws: a sequence is kept when the font lays it out as exactly one glyph cell
(``getlength`` equals the advance of one emoji, so nothing fell apart into separate glyphs, as an unknown ZWJ
or skin-tone sequence does), that glyph has ink (this font's .notdef glyph is blank), and, for flags, the
glyph is not a fallback: Noto draws an unknown regional-indicator pair or subdivision flag as a white flag with
a question mark (the glyph of "AA", a code ISO 3166 never assigns), and a font without that rule would show
an unknown subdivision flag as the bare black flag (its tag characters are invisible); both are refused. The
test uses Pillow's layout only (no font tables, no fontTools).

Train / held-out split: an emoji is held out when the first 8 bytes of SHA-256("lddgan-emoji-split:" + its
base key) read as an integer are below 15 % of 2**64. The base key is its code points in hex without skin-tone
modifiers and variation selectors ("1F44D" for thumbs up and all its tones), so an emoji's split depends on
itself alone: it does not change when emoji are added, dropped or the options change, and the skin-tone
variants of an emoji are always on the same side as their base (a held-out emoji is not leaked into training
as a recolouring; the person-person kiss and couple-with-heart sequences are written differently from "kiss"
and "couple with heart" and follow their own, tone-free key).

Determinism: the images are a function of the font file, the emoji list, Pillow (FreeType, HarfBuzz, its
resampling code) and this module's RENDER_VERSION; ``source_info()`` records all of them for a model's
provenance. A file is identified by its SHA-256; for people it also records the Debian package version (from
/var/lib/dpkg/status, when dpkg's file list of the package holds that file: the changelog would not say whether
the file in use is the packaged one), the font's own version string (name ID 5 of its 'name' table, e.g.
"Version 2.042;GOOG;...", which a copy outside Debian keeps) and emoji-test.txt's "# Version:" and "# Date:"
lines.
"""
from __future__ import annotations

import functools
import hashlib
import os
import re
import struct
from dataclasses import dataclass

import torch

from ..errors import InputError
from .shapes import to_model_range  # noqa: F401  (uint8 -> [-1, 1], the same as for the shapes data)

DEFAULT_FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
DEFAULT_EMOJI_TEST = "/usr/share/unicode/emoji/emoji-test.txt"
FONT_ENV = "LDDGAN_EMOJI_FONT"  # overrides DEFAULT_FONT (the font argument overrides both)
EMOJI_TEST_ENV = "LDDGAN_EMOJI_TEST"
FONT_PACKAGE = "fonts-noto-color-emoji"  # the Debian packages that hold the default files
EMOJI_TEST_PACKAGE = "unicode-data"

RENDER_VERSION = 1  # bump when the rendering below changes (every image changes with it)
STRIKE_SIZE = 109  # Noto Color Emoji's only bitmap strike: any other size is refused by FreeType or rescaled
CANVAS = 144  # side of the square the ink is centred in, in font pixels (glyph cells are 136x128)
BACKGROUND = (255, 255, 255)  # white, as emoji are usually shown
SIZES = (64, 48, 32)  # the sizes the dataset is meant for; any size in MIN_SIZE..MAX_SIZE is accepted
MIN_SIZE, MAX_SIZE = 8, 256
SPLITS = ("train", "heldout")
HELDOUT_FRACTION = 0.15
SPLIT_SALT = "lddgan-emoji-split:"
SKIN_TONE_MODIFIERS = frozenset(range(0x1F3FB, 0x1F400))  # U+1F3FB..U+1F3FF, Fitzpatrick types 1-2 .. 6
COUNTRY_FLAG_SUBGROUPS = ("country-flag", "subdivision-flag")  # dropped unless country_flags=True
MAX_LIST_BYTES = 16 * 2 ** 20  # emoji-test.txt is ~0.6 MB; refuse to read something far larger
_UNKNOWN_FLAG = "\U0001F1E6\U0001F1E6"  # "AA": user-assigned in ISO 3166, never a country: the fallback flag
_BLACK_FLAG = "\U0001F3F4"  # what an unknown subdivision flag (black flag + tags) shows where tags are ignored
_PROBE = "\U0001F600"  # grinning face: present in every colour emoji font; its advance is one glyph cell
_LINE = re.compile(r"^(?P<cps>[0-9A-Fa-f]{4,6}(?: [0-9A-Fa-f]{4,6})*)\s*;\s*(?P<status>[a-z-]+)\s*#\s*\S+"
                   r"(?:\s+E\d+\.\d+)?\s+(?P<name>.+?)\s*$")


@dataclass(frozen=True)
class EmojiEntry:
    """One emoji of the catalog."""

    sequence: str  # the fully-qualified code point sequence (what is drawn), e.g. "\U0001F600"
    name: str  # its CLDR short name from emoji-test.txt, e.g. "grinning face"
    group: str  # e.g. "Smileys & Emotion"
    subgroup: str  # e.g. "face-smiling"
    group_index: int  # index in group_names(): fixed by the file, the same whatever the options
    subgroup_index: int  # index in subgroup_names()
    split: str  # "train" or "heldout" (split_of(sequence))

    @property
    def codepoints(self) -> str:
        """The sequence as emoji-test.txt writes it: "1F44D 1F3FD"."""
        return " ".join(f"{ord(c):04X}" for c in self.sequence)

    @property
    def has_skin_tone(self) -> bool:
        return any(ord(c) in SKIN_TONE_MODIFIERS for c in self.sequence)

    @property
    def is_country_flag(self) -> bool:
        return self.subgroup in COUNTRY_FLAG_SUBGROUPS


# --- the source files ---------------------------------------------------------------------------------------

def _path(arg, env: str, default: str, what: str, package: str) -> str:
    """The file to use (argument, else environment variable, else the Debian path); InputError if it is absent."""
    given = os.fspath(arg) if arg is not None else (os.environ.get(env) or None)
    path = given or default
    if not os.path.isfile(path):
        source = ("given as an argument" if arg is not None else f"from ${env}" if given else "the default path")
        raise InputError(f"emoji data: the {what} {path!r} ({source}) does not exist or is not a file. It comes "
                         f"from the Debian package {package} (apt-get install {package}); elsewhere, set ${env} "
                         f"or pass the path")
    return path


def font_path(font=None) -> str:
    """The Noto Color Emoji font file: ``font``, else $LDDGAN_EMOJI_FONT, else Debian's path."""
    return _path(font, FONT_ENV, DEFAULT_FONT, "font file", FONT_PACKAGE)


def emoji_test_path(emoji_test=None) -> str:
    """Unicode's emoji-test.txt: ``emoji_test``, else $LDDGAN_EMOJI_TEST, else Debian's path."""
    return _path(emoji_test, EMOJI_TEST_ENV, DEFAULT_EMOJI_TEST, "emoji list (emoji-test.txt)", EMOJI_TEST_PACKAGE)


def _stamp(path: str) -> tuple:
    st = os.stat(path)
    return os.path.realpath(path), st.st_size, st.st_mtime_ns  # the in-process caches see a replaced file


@functools.lru_cache(maxsize=4)
def _parse(path: str, size: int, mtime_ns: int) -> tuple:
    """(header {"Version", "Date"}, groups, subgroups [(group, subgroup)], rows [(sequence, name, group, subgroup)])
    of the fully-qualified lines; groups and subgroups in file order, those with no fully-qualified line omitted."""
    if size > MAX_LIST_BYTES:
        raise InputError(f"emoji data: {path!r} is {size} bytes, more than the {MAX_LIST_BYTES} an emoji-test.txt "
                         f"can be (it is ~0.6 MB); is it the right file?")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(MAX_LIST_BYTES + 1)
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"emoji data: cannot read {path!r} as UTF-8 text: {e}") from None
    header, groups, subgroups, rows = {}, [], [], []
    group = subgroup = None
    for no, line in enumerate(text.splitlines(), 1):
        if line.startswith("#"):
            key, _, value = line[1:].strip().partition(":")
            if key in ("Version", "Date") and key not in header and not groups:
                header[key] = value.strip()
            elif key == "group":
                group, subgroup = value.strip(), None
            elif key == "subgroup":
                subgroup = value.strip()
            continue
        if not line.strip():
            continue
        m = _LINE.match(line)
        if m is None or group is None or subgroup is None:
            raise InputError(f"emoji data: {path}:{no}: not an emoji-test.txt line under a '# group:' and a "
                             f"'# subgroup:' line: {line[:120]!r}")
        if m["status"] != "fully-qualified":
            continue
        cps = [int(c, 16) for c in m["cps"].split()]
        if any(c > 0x10FFFF or 0xD800 <= c <= 0xDFFF for c in cps):
            raise InputError(f"emoji data: {path}:{no}: {m['cps']!r} is not a sequence of Unicode scalar values")
        if group not in groups:
            groups.append(group)
        if (group, subgroup) not in subgroups:
            subgroups.append((group, subgroup))
        rows.append(("".join(map(chr, cps)), m["name"], group, subgroup))
    if not rows:
        raise InputError(f"emoji data: {path!r} has no fully-qualified emoji lines: is it Unicode's emoji-test.txt?")
    return header, tuple(groups), tuple(subgroups), tuple(rows)


@functools.lru_cache(maxsize=4)
def _open_font(path: str, size: int, mtime_ns: int):
    from PIL import ImageFont, features

    if not features.check("raqm"):
        raise InputError("emoji data: Pillow was built without libraqm (complex text layout), which is needed to "
                         "draw emoji sequences (flags, families, keycaps) as one glyph; with Pillow's wheels it "
                         "needs libfribidi at run time (apt-get install libfribidi0)")
    try:
        font = ImageFont.truetype(path, STRIKE_SIZE, layout_engine=ImageFont.Layout.RAQM)
    except OSError as e:
        raise InputError(f"emoji data: {path!r} cannot be opened as a font of size {STRIKE_SIZE} ({e}); it should be "
                         f"Noto Color Emoji (apt-get install {FONT_PACKAGE})") from None
    cell = font.getlength(_PROBE)
    if cell <= 0 or _ink_box(font, _PROBE) is None:
        raise InputError(f"emoji data: the font {path!r} has no glyph for U+1F600 (grinning face); it should be "
                         f"Noto Color Emoji (apt-get install {FONT_PACKAGE})")
    return font, cell


def _font(font=None):
    """(FreeTypeFont at the bitmap strike, the advance of one glyph cell) for the font ``font`` names."""
    return _open_font(*_stamp(font_path(font)))


# --- rendering ----------------------------------------------------------------------------------------------

def _draw(font, seq: str, canvas_size: tuple, at: tuple, background):
    from PIL import Image, ImageDraw

    im = Image.new("RGBA", canvas_size, background)
    ImageDraw.Draw(im).text(at, seq, font=font, embedded_color=True)
    return im


def _on_transparent(font, seq: str):
    """seq drawn at (0, 0) on a transparent RGBA canvas (for its ink box, or to compare two glyphs)."""
    w = int(font.getlength(seq)) + STRIKE_SIZE  # room for a wide (unsupported) sequence
    return _draw(font, seq, (w, 2 * STRIKE_SIZE), (0, 0), (0, 0, 0, 0))


def _ink_box(font, seq: str):
    """The glyph's ink (alpha > 0) bounding box at (0, 0); None if it has no ink."""
    return _on_transparent(font, seq).getchannel("A").getbbox()


def _render_one(font, seq: str, size: int) -> torch.Tensor:
    """uint8 [3, size, size]: the glyph's ink centred on white in a CANVAS square, Lanczos-resized to size."""
    import numpy as np
    from PIL import Image

    box = _ink_box(font, seq)
    if box is None:
        raise InputError(f"emoji data: the font draws nothing for {seq!r} "
                         f"({' '.join(f'U+{ord(c):04X}' for c in seq)}); take the emoji from load_catalog()")
    l, t, r, b = box
    side = max(CANVAS, r - l, b - t)  # a glyph larger than the canvas (not in Noto) is shrunk, never cut
    # Drawn directly on the opaque white canvas: Pillow blends the glyph's straight-alpha colour over it, which is
    # the correct composite. Drawing on a transparent canvas and alpha-compositing that onto white would apply the
    # alpha twice (ImageDraw leaves colour x alpha in a transparent canvas) and give the edges a dark fringe.
    at = (-((l + r - side) // 2), -((t + b - side) // 2))  # puts the ink's centre at the square's centre
    im = _draw(font, seq, (side, side), at, BACKGROUND + (255,))
    im = im.convert("RGB").resize((size, size), Image.LANCZOS)
    return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)


def _drawable(font, cell: float, seq: str, fallbacks: frozenset) -> bool:
    """True when the font draws seq as one glyph of its own (the test in the module docstring); ``fallbacks``
    holds the _ink_image of the glyphs an unknown flag falls back to."""
    if abs(font.getlength(seq) - cell) > 0.5:  # zero cells (ignorable only) or fell apart into several glyphs
        return False
    l, t, r, b = font.getbbox(seq)
    if r <= l or b <= t:  # the .notdef glyph of Noto Color Emoji is blank (a zero-height box)
        return False
    return not _is_flag_sequence(seq) or _ink_image(font, seq) not in fallbacks


def _is_flag_sequence(seq: str) -> bool:
    """A pair of regional indicators, or the black flag followed by tag characters (a subdivision flag)."""
    cps = [ord(c) for c in seq]
    if len(cps) == 2 and all(0x1F1E6 <= c <= 0x1F1FF for c in cps):
        return seq != _UNKNOWN_FLAG
    return len(cps) > 2 and cps[0] == ord(_BLACK_FLAG) and all(0xE0020 <= c <= 0xE007F for c in cps[1:])


def _ink_image(font, seq: str) -> bytes:
    return _on_transparent(font, seq).tobytes()


# --- the catalog --------------------------------------------------------------------------------------------

def _base_key(seq: str) -> str:
    return " ".join(f"{ord(c):X}" for c in seq if ord(c) not in SKIN_TONE_MODIFIERS and ord(c) != 0xFE0F)


def split_of(sequence: str) -> str:
    """"train" or "heldout" for an emoji sequence: the fixed rule of the module docstring (~15 % held out)."""
    if not isinstance(sequence, str) or not sequence:
        raise InputError(f"split_of: sequence must be a non-empty str, got {sequence!r}")
    digest = hashlib.sha256((SPLIT_SALT + _base_key(sequence)).encode("ascii")).digest()
    return "heldout" if int.from_bytes(digest[:8], "big") < int(HELDOUT_FRACTION * 2 ** 64) else "train"


@functools.lru_cache(maxsize=4)
def _all_drawable(font_stamp: tuple, test_stamp: tuple) -> tuple:
    """(every fully-qualified emoji the font draws as EmojiEntry, the (sequence, name) it cannot draw, the
    (sequence, name, name of the earlier emoji it duplicates) of those dropped as exact duplicates).

    Exact duplicates: the font may draw two sequences with the same glyph (Noto 2.042: "family: man, man, boy" is
    "family"; flags of territories that share their country's flag; a snowboarder's skin tones). The first in file
    order is kept and the others dropped: they would weigh one picture double and, on the other side of the split,
    put a training image into the held-out set. Found by comparing the glyphs' ink (~6 s for the whole file)."""
    _, groups, subgroups, rows = _parse(*test_stamp)
    font, cell = _open_font(*font_stamp)
    sub_index = {gs: i for i, gs in enumerate(subgroups)}
    fallbacks = frozenset(_ink_image(font, s) for s in (_UNKNOWN_FLAG, _BLACK_FLAG))
    kept, missing, duplicates, seen = [], [], [], {}
    for seq, name, group, subgroup in rows:
        if not _drawable(font, cell, seq, fallbacks):
            missing.append((seq, name))
            continue
        ink = hashlib.sha256(_ink_image(font, seq)).digest()
        if ink in seen:
            duplicates.append((seq, name, seen[ink]))
            continue
        seen[ink] = name
        kept.append(EmojiEntry(seq, name, group, subgroup, groups.index(group), sub_index[(group, subgroup)],
                               split_of(seq)))
    return tuple(kept), tuple(missing), tuple(duplicates)


def _check_bool(fn: str, **kw) -> None:
    for k, v in kw.items():
        if not isinstance(v, bool):
            raise InputError(f"{fn}: {k} must be True or False, got {v!r}")


def load_catalog(font=None, emoji_test=None, skin_tones: bool = False,
                 country_flags: bool = False) -> list[EmojiEntry]:
    """The emoji of emoji-test.txt (fully-qualified) that the font draws, in the file's (CLDR) order.
    skin_tones: keep the variants with skin-tone modifiers (default: the base emoji only); country_flags: keep the
    country and subdivision flags (default: no). See the module docstring for the measurements behind both."""
    _check_bool("load_catalog", skin_tones=skin_tones, country_flags=country_flags)
    kept = _all_drawable(_stamp(font_path(font)), _stamp(emoji_test_path(emoji_test)))[0]
    return [e for e in kept if (skin_tones or not e.has_skin_tone) and (country_flags or not e.is_country_flag)]


def group_names(emoji_test=None) -> tuple[str, ...]:
    """The groups of emoji-test.txt that hold fully-qualified emoji, in file order (EmojiEntry.group_index)."""
    return _parse(*_stamp(emoji_test_path(emoji_test)))[1]


def subgroup_names(emoji_test=None) -> tuple[str, ...]:
    """The subgroups, in file order (EmojiEntry.subgroup_index)."""
    return tuple(s for _, s in _parse(*_stamp(emoji_test_path(emoji_test)))[2])


def _check_size(fn: str, size) -> None:
    if not isinstance(size, int) or isinstance(size, bool) or not MIN_SIZE <= size <= MAX_SIZE:
        raise InputError(f"{fn}: size must be an integer in [{MIN_SIZE}, {MAX_SIZE}] (64, 48 or 32 are the "
                         f"intended ones), got {size!r}")


def _select(fn: str, split: str, catalog) -> tuple[list[int], list[EmojiEntry]]:
    """(the catalog positions of ``split``, the catalog: default load_catalog())."""
    if split not in SPLITS + ("all",):
        raise InputError(f"{fn}: split must be one of {list(SPLITS) + ['all']}, got {split!r}")
    if catalog is None:
        catalog = load_catalog()
    elif not isinstance(catalog, (list, tuple)) or not all(isinstance(e, EmojiEntry) for e in catalog):
        raise InputError(f"{fn}: catalog must be a list of EmojiEntry (from load_catalog), "
                         f"got {type(catalog).__name__}")
    idx = [i for i, e in enumerate(catalog) if split == "all" or e.split == split]
    return idx, list(catalog)


def render(sequence: str, size: int = 64, font=None) -> torch.Tensor:
    """One emoji sequence -> uint8 [3, size, size] (as in make_emoji)."""
    _check_size("render", size)
    if not isinstance(sequence, str) or not sequence or len(sequence) > 32:
        raise InputError(f"render: sequence must be a non-empty str of at most 32 code points, got {sequence!r}")
    return _render_one(_font(font)[0], sequence, size)


def make_emoji(split: str = "train", size: int = 64, catalog=None,
               font=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The images of one split ("train", "heldout" or "all") of ``catalog`` (default: load_catalog()), in catalog
    order: uint8 [N, 3, size, size] and labels {"group", "subgroup": the entries' group_index / subgroup_index,
    "index": the position in the catalog}, int64 [N]."""
    _check_size("make_emoji", size)
    idx, catalog = _select("make_emoji", split, catalog)
    font_obj = _font(font)[0]
    images = torch.zeros(len(idx), 3, size, size, dtype=torch.uint8)
    for k, i in enumerate(idx):
        images[k] = _render_one(font_obj, catalog[i].sequence, size)
    labels = {"group": torch.tensor([catalog[i].group_index for i in idx], dtype=torch.int64),
              "subgroup": torch.tensor([catalog[i].subgroup_index for i in idx], dtype=torch.int64),
              "index": torch.tensor(idx, dtype=torch.int64)}
    return images, labels


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def save_folder(folder: str, split: str = "train", size: int = 64, catalog=None, font=None) -> str:
    """Write a split as PNG files <folder>/<group>/<catalog index>_<code points>.png (e.g. to train from the CLI),
    e.g. smileys_emotion/0000_1F600.png; each file is written atomically."""
    from PIL import Image

    from ..atomic import atomic_write

    _check_size("save_folder", size)
    idx, catalog = _select("save_folder", split, catalog)
    images, _ = make_emoji(split, size, catalog, font)
    for k, i in enumerate(idx):
        e = catalog[i]
        path = os.path.join(os.fspath(folder), _slug(e.group), f"{i:04d}_{e.codepoints.replace(' ', '_')}.png")
        img = Image.fromarray(images[k].permute(1, 2, 0).numpy())
        atomic_write(path, lambda tmp, img=img: img.save(tmp, format="PNG"))
    return os.fspath(folder)


# --- provenance ---------------------------------------------------------------------------------------------

def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _font_version(path: str) -> str | None:
    """The font's own version string (name ID 5, e.g. "Version 2.042;GOOG;noto-emoji:20231129:..."), read from
    its 'name' table; None if the file has none (this reads a few hundred bytes, no font library)."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
            num = struct.unpack(">H", head[4:6])[0]
            records = f.read(16 * min(num, 512))
            for i in range(0, len(records) - 15, 16):
                tag, _, offset, length = struct.unpack(">4sIII", records[i:i + 16])
                if tag == b"name":
                    f.seek(offset)
                    table = f.read(min(length, 1 << 20))
                    break
            else:
                return None
        count, strings = struct.unpack(">HH", table[2:6])
        found = {}
        for i in range(count):
            pid, eid, _, nid, ln, off = struct.unpack(">6H", table[6 + 12 * i: 18 + 12 * i])
            if nid == 5:
                raw = table[strings + off: strings + off + ln]
                found.setdefault(pid, raw.decode("utf-16-be" if pid in (0, 3) else "latin-1", "replace"))
        return found.get(3) or found.get(1) or found.get(0)
    except (OSError, struct.error, ValueError):
        return None


def _debian_version(package: str, path: str) -> str | None:
    """"<package> <version>" when dpkg lists ``path`` as a file of ``package`` (the Debian path, or a link to it);
    None otherwise (another install, or not Debian)."""
    try:
        real = os.path.realpath(path)
        with open(f"/var/lib/dpkg/info/{package}.list", encoding="utf-8") as f:
            if not any(os.path.realpath(line.rstrip("\n")) == real for line in f):
                return None
        with open("/var/lib/dpkg/status", encoding="utf-8") as f:
            for stanza in f.read().split("\n\n"):
                fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " ")
                if fields.get("Package") == package and fields.get("Status", "").endswith(" installed"):
                    return f"{package} {fields.get('Version')}"
    except (OSError, UnicodeDecodeError):
        return None
    return None


def source_info(font=None, emoji_test=None, skin_tones: bool = False, country_flags: bool = False) -> dict:
    """Where the images come from, for a model's provenance (all values str, int or bool): the two files (path,
    SHA-256, the Debian package version when dpkg owns the file, the font's own version string, emoji-test.txt's
    Version and Date lines), the libraries that render (Pillow, FreeType, HarfBuzz, raqm), RENDER_VERSION and the
    catalog options. The same dict means the same images."""
    import PIL
    from PIL import features

    _check_bool("source_info", skin_tones=skin_tones, country_flags=country_flags)
    fp, tp = font_path(font), emoji_test_path(emoji_test)
    header = _parse(*_stamp(tp))[0]
    return {
        "dataset": "emoji", "render_version": RENDER_VERSION,
        "font_path": fp, "font_sha256": _sha256(fp), "font_version": _font_version(fp) or "",
        "font_package": _debian_version(FONT_PACKAGE, fp) or "",
        "emoji_test_path": tp, "emoji_test_sha256": _sha256(tp),
        "emoji_test_version": header.get("Version", ""), "emoji_test_date": header.get("Date", ""),
        "emoji_test_package": _debian_version(EMOJI_TEST_PACKAGE, tp) or "",
        "pillow": PIL.__version__, "freetype": features.version("freetype2") or "",
        "harfbuzz": features.version("harfbuzz") or "", "raqm": features.version("raqm") or "",
        "strike_size": STRIKE_SIZE, "canvas": CANVAS, "background": "white", "resample": "lanczos",
        "skin_tones": skin_tones, "country_flags": country_flags,
        "heldout_fraction": HELDOUT_FRACTION, "split_salt": SPLIT_SALT,
    }


# --- measurements -------------------------------------------------------------------------------------------

def _base_of(entry: EmojiEntry, by_seq: dict, by_name: dict) -> EmojiEntry | None:
    """The emoji a skin-tone variant recolours: the sequence without its modifiers (a modifier that replaced the
    base's U+FE0F is put back), else the name without its "... skin tone" parts."""
    stripped = "".join(c for c in entry.sequence if ord(c) not in SKIN_TONE_MODIFIERS)
    with_fe0f = "".join("\uFE0F" if ord(c) in SKIN_TONE_MODIFIERS else c for c in entry.sequence)
    for s in (stripped, with_fe0f):
        if s in by_seq:
            return by_seq[s]
    head, _, tail = entry.name.partition(": ")
    rest = [p for p in tail.split(", ") if not p.endswith("skin tone")]
    # "kiss: person, person, light skin tone, dark skin tone" recolours "kiss" (U+1F48F), a different sequence
    return by_name.get(head + (": " + ", ".join(rest) if rest else "")) or by_name.get(head)


def measure_variants(font=None, emoji_test=None, size: int = 64, time_render: bool = True) -> dict:
    """The figures behind the defaults (module docstring): counts kept and dropped, the distance of a skin-tone
    variant to its base emoji against the nearest-neighbour distance between base emoji (RMS over the pixels in
    [0, 1] at ``size``), and the time to render the default train split. Takes ~10 s."""
    import statistics
    import time

    _check_size("measure_variants", size)
    header, groups, _, rows = _parse(*_stamp(emoji_test_path(emoji_test)))
    everything = load_catalog(font, emoji_test, skin_tones=True, country_flags=True)
    _, missing, duplicates = _all_drawable(_stamp(font_path(font)), _stamp(emoji_test_path(emoji_test)))
    tones = [e for e in everything if e.has_skin_tone]
    bases = [e for e in everything if not e.has_skin_tone]
    by_seq, by_name = {e.sequence: e for e in bases}, {e.name: e for e in bases}
    default = load_catalog(font, emoji_test)
    no_tone_subgroups: dict[str, int] = {}
    for e in bases:
        no_tone_subgroups[e.subgroup] = no_tone_subgroups.get(e.subgroup, 0) + 1
    out = {
        "emoji_test_version": header.get("Version", ""), "fully_qualified": len(rows),
        "drawable": len(everything), "not_drawable": len(missing),
        "not_drawable_examples": [n for _, n in missing[:10]],
        "exact_duplicates": len(duplicates), "exact_duplicate_examples": [f"{n} = {m}" for _, n, m in duplicates[:10]],
        "skin_tone_variants": len(tones), "base_emoji": len(bases),
        "country_flags": sum(e.subgroup == "country-flag" for e in everything),
        "subdivision_flags": sum(e.subgroup == "subdivision-flag" for e in everything),
        "other_flags": sum(e.group == "Flags" and not e.is_country_flag for e in everything),
        "largest_subgroups_without_tones": sorted(no_tone_subgroups.items(), key=lambda kv: -kv[1])[:3],
        "with_all_people_and_body": sum(e.group == "People & Body" for e in everything),
        "default_catalog": len(default), "default_train": sum(e.split == "train" for e in default),
        "default_heldout": sum(e.split == "heldout" for e in default),
        "default_per_group": {g: sum(e.group == g for e in default) for g in groups},
    }
    font_obj = _font(font)[0]

    def images(entries) -> torch.Tensor:  # [n, 3 * size * size] float64 in [0, 1]
        return torch.stack([_render_one(font_obj, e.sequence, size).flatten() for e in entries]).double() / 255

    def dist(x, y) -> torch.Tensor:  # RMS distance between the rows of x and those of y
        d2 = x.pow(2).sum(1)[:, None] + y.pow(2).sum(1)[None] - 2 * x @ y.T
        return (d2.clamp_min(0) / x.shape[1]).sqrt()

    pairs = [(t, _base_of(t, by_seq, by_name)) for t in tones]
    pairs = [(t, b) for t, b in pairs if b is not None]
    out["skin_tone_without_base"] = len(tones) - len(pairs)
    xb, xt = images(bases), images([t for t, _ in pairs])
    row = {e.sequence: i for i, e in enumerate(bases)}
    own = torch.tensor([row[b.sequence] for _, b in pairs])
    to_bases = dist(xt, xb)  # [tone variants, base emoji]
    d_tone = to_bases[torch.arange(len(pairs)), own]
    nn = dist(xb, xb).fill_diagonal_(float("inf")).min(1).values  # each base emoji's nearest other base emoji
    median_nn = float(nn.median())
    flag = torch.tensor([e.subgroup == "country-flag" for e in bases])
    same_base = [[i for i, (_, b) in enumerate(pairs) if b is base] for base in bases]
    between = [float(d) for ii in same_base if len(ii) > 1
               for d in dist(xt[ii], xt[ii])[torch.triu_indices(len(ii), len(ii), 1).unbind()]]
    # silhouettes: the pixels some channel of which is below 245 (not background); nearest-neighbour IoU
    masks = (xb.view(len(bases), 3, -1).min(1).values < 245 / 255).double()
    inter = masks @ masks.T
    iou = (inter / (masks.sum(1)[:, None] + masks.sum(1)[None] - inter).clamp_min(1)).fill_diagonal_(0)
    nn_iou = iou.max(1).values
    out.update({
        "country_flag_silhouette_nn_iou_median": round(float(nn_iou[flag].median()), 3),
        "other_silhouette_nn_iou_median": round(float(nn_iou[~flag].median()), 3),
    })
    out.update({
        "distance": f"RMS over pixels and channels in [0, 1] at {size} px",
        "skin_tone_to_base_mean": round(float(d_tone.mean()), 4),
        "skin_tone_to_base_median": round(float(d_tone.median()), 4),
        "skin_tone_between_tones_mean": round(statistics.fmean(between), 4),
        "base_nearest_neighbour_median": round(median_nn, 4),
        "skin_tone_closer_to_base_than_median_nn": round(float((d_tone < median_nn).double().mean()), 3),
        "skin_tone_nearest_base_is_own_base": round(float((to_bases.argmin(1) == own).double().mean()), 3),
        "country_flag_nearest_neighbour_median": round(float(nn[flag].median()), 4),
        "other_nearest_neighbour_median": round(float(nn[~flag].median()), 4),
    })
    if time_render:
        t0 = time.perf_counter()
        make_emoji("train", size, default, font)
        out["render_train_seconds"] = round(time.perf_counter() - t0, 2)
    return out


def _main(argv=None) -> int:
    import argparse
    import json

    p = argparse.ArgumentParser(prog="python -m lddgan_core.data.emoji",
                                description="The emoji dataset: figures, a preview grid, or PNG files.")
    p.add_argument("--stats", action="store_true", help="print the measurements behind the defaults (JSON)")
    p.add_argument("--info", action="store_true", help="print source_info() (JSON)")
    p.add_argument("--grid", metavar="PNG", help="write a grid of the first 256 images of --split")
    p.add_argument("--folder", metavar="DIR", help="write --split as PNG files under DIR")
    p.add_argument("--split", default="train", choices=SPLITS + ("all",))
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--skin-tones", action="store_true", help="keep skin-tone variants")
    p.add_argument("--country-flags", action="store_true", help="keep country and subdivision flags")
    a = p.parse_args(argv)
    if not (a.stats or a.info or a.grid or a.folder):
        p.print_help()
        return 0
    try:
        _check_size("--size", a.size)
        if a.info:
            print(json.dumps(source_info(skin_tones=a.skin_tones, country_flags=a.country_flags), indent=1))
        if a.stats:
            print(json.dumps(measure_variants(size=a.size), indent=1, ensure_ascii=False))
        catalog = load_catalog(skin_tones=a.skin_tones, country_flags=a.country_flags)
        if a.grid:
            from .images import make_grid, save_png

            idx, _ = _select("--grid", a.split, catalog)
            sub = [catalog[i] for i in idx[:256]]
            images, _ = make_emoji("all", a.size, sub)
            save_png(make_grid(to_model_range(images), nrow=16), a.grid)
            print(f"wrote {a.grid} ({len(sub)} images)")
        if a.folder:
            save_folder(a.folder, a.split, a.size, catalog)
            print(f"wrote {a.folder}")
    except InputError as e:
        print(f"error: {e}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
