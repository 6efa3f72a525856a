"""The quadrature rules of ``gaussian._rules`` against closed forms (monomial moments)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from exactdgn.gaussian._rules import gauss_kronrod_01, gauss_legendre_01

# QUADPACK's qk21 weights on [-1, 1] (Piessens et al. 1983), an independent printed source
_QK21_WGK = (
    0.011694638867371874278064396062192,
    0.032558162307964727478818972459390,
    0.054755896574351996031381300244580,
    0.075039674810919952767043140916190,
    0.093125454583697605535065465083366,
    0.109387158802297641899210590325805,
    0.123491976262065851077958109831074,
    0.134709217311473325928054001771707,
    0.142775938577060080797094273138717,
    0.147739104901338491374841515972068,
    0.149445554002916905664936468389821,
)


def _moment_errors(x, w, degrees):
    """|sum_i w_i x_i^k - 1/(k+1)| for each k (exact moments of [0, 1])."""
    return np.array([abs(float(w @ x**k) - float(Fraction(1, k + 1))) for k in degrees])


def test_gauss_kronrod_is_exact_to_degree_31_and_its_gauss_rule_to_19():
    x, wk, wg = gauss_kronrod_01()
    assert x.shape == wk.shape == wg.shape == (21,)
    assert np.all(np.diff(x) > 0) and x[0] > 0 and x[-1] < 1
    assert np.all(wk > 0)
    assert np.count_nonzero(wg) == 10
    assert _moment_errors(x, wk, range(32)).max() < 4e-16
    assert _moment_errors(x, wg, range(20)).max() < 4e-16
    # and not beyond: the 10-node rule misses degree 20 (the check has something to see)
    assert _moment_errors(x, wg, [20])[0] > 1e-12


def test_the_embedded_rule_is_the_10_node_gauss_legendre_rule():
    x, _, wg = gauss_kronrod_01()
    xg, wgl = gauss_legendre_01(10)
    on = wg > 0
    np.testing.assert_allclose(x[on], xg, rtol=0, atol=2e-16)
    np.testing.assert_allclose(wg[on], wgl, rtol=0, atol=2e-16)


def test_the_kronrod_weights_are_quadpacks():
    _, wk, _ = gauss_kronrod_01()
    full = 0.5 * np.array(_QK21_WGK + _QK21_WGK[-2::-1])
    np.testing.assert_allclose(wk, full, rtol=0, atol=1e-15)


@pytest.mark.parametrize("rule", [gauss_kronrod_01, lambda: gauss_legendre_01(16)])
def test_rules_are_read_only(rule):
    for a in rule():
        with pytest.raises(ValueError):
            a[0] = 1.0
