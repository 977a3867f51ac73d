"""Shared by the emoji data and evaluation tests: skip (with what to install) where the Debian sources are absent."""
import pytest

from lddgan_core.data import emoji as E
from lddgan_core.errors import InputError


def _sources_present() -> bool:
    try:
        E.font_path(), E.emoji_test_path()
    except InputError:
        return False
    return True


needs_sources = pytest.mark.skipif(
    not _sources_present(),
    reason="Noto Color Emoji or emoji-test.txt is not installed (apt-get install fonts-noto-color-emoji "
           "unicode-data, or set $LDDGAN_EMOJI_FONT / $LDDGAN_EMOJI_TEST)")
