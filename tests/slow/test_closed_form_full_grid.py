"""Closed-form moments against mpmath quadrature on the points the default tier leaves out:
every other narrow-grid point of each activation and the further extremes
(``moment_engine/test_closed_form.py`` checks the rest)."""
from __future__ import annotations

import pytest

from autoinit_sym.moment_engine.closed_form import ClosedForm
from helpers import CLOSED_FORM_SLOW, assert_closed_form_matches_mpmath, cached_closed_form


@pytest.fixture(scope="module")
def derived() -> dict[str, ClosedForm]:
    return {}


@pytest.mark.parametrize("name,mu,var", CLOSED_FORM_SLOW)
def test_moments_match_mpmath(derived, name, mu, var):
    assert_closed_form_matches_mpmath(cached_closed_form(derived, name), name, mu, var)
