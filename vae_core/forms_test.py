from types import SimpleNamespace

import pytest

from vae_core import forms
from vae_core.config import VAEConfig

pytestmark = pytest.mark.fast

DEFAULTS = {"strided_conv": "space_to_depth", "transposed_conv": "native", "output_transposed_conv": "col2im"}


def test_every_kind_has_native_first_and_the_native_forms_name_every_kind():
    assert all(choices[0] == "native" for choices in forms.FORMS.values())
    assert dict.fromkeys(forms.FORMS, "native") == forms.NATIVE_FORMS
    assert set(forms.HOLDERS) == set(forms.FORMS)


def test_the_subpixel_taps_are_three_minus_phase_minus_twice_the_window_row():
    assert [[3 - a - 2 * r for r in (0, 1)] for a in (0, 1)] == forms.SUBPIXEL_TAPS.tolist()


def test_resolve_forms_takes_each_given_form_and_the_defaults_for_the_rest():
    assert forms.resolve_forms(DEFAULTS) == DEFAULTS
    assert forms.resolve_forms(DEFAULTS, strided_conv=None, transposed_conv="subpixel") == {
        **DEFAULTS, "transposed_conv": "subpixel"}


@pytest.mark.parametrize("given, message", [
    ({"transposed_conv": "fft"}, "transposed_conv must be one of ('native', 'subpixel'), got 'fft'"),
    ({"strided_conv": "fft"}, "strided_conv must be one of ('native', 'space_to_depth'), got 'fft'"),
    ({"output_transposed_conv": "subpixel"},
     "output_transposed_conv must be one of ('native', 'col2im'), got 'subpixel'"),
])
def test_resolve_forms_names_the_bad_value(given, message):
    with pytest.raises(ValueError) as info:
        forms.resolve_forms(DEFAULTS, **given)
    assert str(info.value) == message


def test_resolve_forms_refuses_an_unknown_kind():
    with pytest.raises(TypeError, match=r"unknown layer kinds \['strided'\]"):
        forms.resolve_forms(DEFAULTS, strided="native")


def test_forms_of_reads_what_the_encoder_and_decoder_hold():
    encoder = SimpleNamespace(strided_conv="space_to_depth")
    decoder = SimpleNamespace(transposed_conv="subpixel", output_transposed_conv="native")
    conv = SimpleNamespace(config=VAEConfig(), encoder=encoder, decoder=decoder)
    assert forms.forms_of(conv) == {"strided_conv": "space_to_depth", "transposed_conv": "subpixel",
                                    "output_transposed_conv": "native"}
    mlp = SimpleNamespace(config=VAEConfig(arch="mlp"))
    assert forms.forms_of(mlp) == forms.NATIVE_FORMS
    assert forms.forms_of(mlp) is not forms.NATIVE_FORMS  # a copy: the table stays as it is

