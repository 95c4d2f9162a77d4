"""Tests of gaussdiff.columns' Table transform: every column kind survives codes -> model units -> codes, the
per-sample log-Jacobian is autograd's over the density columns only, the quantile map makes a column ~N(0, 1), missing
cells give NaN entries, and to_dict / from_dict round-trip through JSON and the registry and refuse corrupt dicts."""

import json
import math

import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch

from gaussdiff.cli.common import table_note
from gaussdiff.columns import EPS, TIE_WIDEN, ColumnSpec, Table, check_spec, constant_code
from gaussdiff.errors import InputError
from gaussdiff.transforms import TRANSFORMS, transform_from_dict

SPECS = [
    ColumnSpec("height", "continuous"),  # standardize
    ColumnSpec("income", "continuous", transform="quantile"),
    ColumnSpec("age", "integer"),
    ColumnSpec("weight", "positive"),
    ColumnSpec("share", "bounded", low=0, high=100),
    ColumnSpec("color", "categorical", categories=["blue", "green", "red"]),
    ColumnSpec("country", "constant", value="FR"),
]
CONTINUOUS = [0, 1, 3, 4]  # height, income, weight, share
DENSITY = [0, 1, 2, 3, 4]  # the columns the density covers (not color, not country)


def mixed(n: int, seed: int) -> np.ndarray:
    """n rows of codes of SPECS; the share column holds its exact bounds 0 and 100 in its first two rows."""
    rng = np.random.default_rng(seed)
    share = rng.uniform(0, 100, n)
    share[:2] = [0.0, 100.0]
    return np.stack([rng.normal(170, 10, n), rng.lognormal(10, 1, n), rng.integers(18, 91, n),
                     rng.lognormal(4, 0.3, n), share, rng.integers(0, 3, n), np.zeros(n)], axis=1)


@pytest.fixture(scope="module")
def table() -> Table:
    return Table.fit(mixed(500, 0), SPECS)


def test_every_kind_round_trips(table):
    x = mixed(300, 1)  # fresh rows: the quantile map's segments are not all at knots
    x[5, 1], x[6, 1] = -1e5, 1e8  # beyond the income column's end knots: its linear tails
    back = table.inverse(table.forward(x)).numpy()
    for j in CONTINUOUS:  # float64 round-off only; share holds an exact 0, hence a tiny absolute part too
        np.testing.assert_allclose(back[:, j], x[:, j], rtol=1e-9, atol=1e-12 * np.abs(x[:, j]).max())
    assert np.array_equal(back[:, 5], x[:, 5])  # categories exactly
    age = table.to_dict()["columns"][2]
    assert np.array_equal(back[:, 2], np.clip(x[:, 2], age["min"], age["max"]))  # integers exactly, in the fit's range
    assert (back[:, 6] == 0).all()  # a text constant's code is 0


def test_dequantized_integers_decode_to_their_integer(table):
    """x = k + u - 1/2 decodes to k for u across [0, 1) (up to the float64 round-off of the affine map at u = 0)."""
    x = mixed(6, 2)
    u = torch.tensor([1e-9, 0.1, 0.25, 0.5, 0.75, 1 - 1e-9], dtype=torch.float64)[:, None].expand(6, 7)
    x_deq = table.dequantize(x, u)
    assert torch.equal(x_deq[:, 2], torch.as_tensor(x[:, 2]) + (u[:, 2] - 0.5))
    others = [0, 1, 3, 4, 5, 6]
    assert torch.equal(x_deq[:, others], torch.as_tensor(x[:, others]))  # only integer columns are dequantized
    assert torch.equal(table.inverse(table.forward(x_deq))[:, 2], torch.as_tensor(x[:, 2]))


def test_the_dequantization_shift_is_what_dequantizing_adds_in_model_units(table):
    """forward(dequantize(x, u)) - forward(x): (u - 1/2) / std on each integer column's entry, 0 elsewhere (the
    oracle: the map applied to the dequantized codes; float64 round-off of the affine map only)."""
    x = mixed(200, 3)
    u = torch.rand(200, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = table.forward(table.dequantize(x, u)) - table.forward(x)
    shift = table.dequantization_shift(u)
    torch.testing.assert_close(shift, expected, rtol=0, atol=1e-12)
    assert (shift[:, 2] != 0).all() and (shift[:, [0, 1, 3, 4, 5, 6, 7]] == 0).all()  # age's entry only


def test_integer_column_statistics_and_clamp():
    k = np.array([[1.0], [2.0], [2.0], [7.0]])
    t = Table.fit(k, [ColumnSpec("n", "integer")])
    col = t.to_dict()["columns"][0]
    assert col["mean"] == pytest.approx(3.0) and col["min"] == 1 and col["max"] == 7
    assert col["std"] == pytest.approx(math.sqrt(np.var(k) + 1 / 12), rel=1e-12)  # var of k + u - 1/2
    y = torch.tensor([[-50.0], [50.0], [(3.4 - 3.0) / col["std"]]], dtype=torch.float64)
    assert t.inverse(y)[:, 0].tolist() == [1.0, 7.0, 3.0]  # clamped to the observed range, rounded


def test_constant_columns_decode_to_their_code():
    x = np.array([[1.0, 3.5], [2.0, 3.5], [4.0, 3.5]])
    t = Table.fit(x, [ColumnSpec("a", "continuous"), ColumnSpec("b", "constant", value="3.5")])
    assert t.sample_shape == (1,) and t.model_slices == [slice(0, 1), slice(1, 1)]
    assert t.inverse(t.forward(x))[:, 1].tolist() == [3.5, 3.5, 3.5]
    assert constant_code("3.5") == 3.5 and constant_code("FR") == 0 and constant_code("inf") == 0


def test_log_abs_det_jacobian_is_autograds_over_the_density_columns(table):
    x = torch.as_tensor(mixed(6, 3))
    x[:, 2] += torch.rand(6, generator=torch.Generator().manual_seed(0), dtype=torch.float64) - 0.5  # dequantized
    rows = [table.model_slices[j].start for j in DENSITY]  # each density column has one model entry
    got = table.log_abs_det_jacobian(x)
    assert got.shape == (6,) and got.dtype == torch.float64
    for i in range(6):
        jac = torch.autograd.functional.jacobian(lambda r: table.forward(r[None])[0], x[i])  # (D, C)
        assert (jac[:, [5, 6]] == 0).all()  # the categorical and constant codes move nothing (piecewise constant)
        expected = torch.linalg.slogdet(jac[rows][:, DENSITY]).logabsdet
        assert got[i].item() == pytest.approx(expected.item(), rel=1e-10, abs=1e-10)
    changed = x.clone()
    changed[:, 5], changed[:, 6] = (changed[:, 5] + 1) % 3, 9.0
    assert torch.equal(table.log_abs_det_jacobian(changed), got)  # categorical and constant cells do not count
    assert table.density_columns == ["height", "income", "age", "weight", "share"]


def test_log_abs_det_jacobian_refuses_a_missing_density_cell_only(table):
    x = mixed(4, 4)
    x[1, 5] = np.nan  # a missing category is fine: it is not in the density
    assert torch.isfinite(table.log_abs_det_jacobian(x)).all()
    x[2, 3] = np.nan
    with pytest.raises(InputError, match=r"column 'weight': row 3 is missing"):
        table.log_abs_det_jacobian(x)


def test_quantile_map_sends_the_training_column_to_a_standard_normal():
    n = 3000  # more rows than knots (1000): interpolated quantiles
    x = np.random.default_rng(5).lognormal(0, 1.5, (n, 1))
    t = Table.fit(x, [ColumnSpec("v", "continuous", transform="quantile")])
    y = t.forward(x)[:, 0].numpy()
    # the map is deterministic; a random N(0, 1) sample of size n has KS < 1.63 / sqrt(n) with probability 0.99
    assert scipy.stats.kstest(y, "norm").statistic < 1.63 / math.sqrt(n)
    plain = Table.fit(x, [ColumnSpec("v", "continuous")]).forward(x)[:, 0].numpy()
    assert scipy.stats.kstest(plain, "norm").statistic > 0.1  # standardizing leaves the skew: the test can fail


def test_quantile_knots_are_the_sorted_data_with_their_normal_scores():
    """With n <= 1000 distinct values the knots are the sorted values at p_k = k / (n - 1), clipped to [1e-7,
    1 - 1e-7], and beyond the ends the slope is 1 / std."""
    v = np.random.default_rng(6).gamma(2.0, 3.0, 200)
    t = Table.fit(v[:, None], [ColumnSpec("v", "continuous", transform="quantile")])
    order = np.sort(v)
    expected = scipy.special.ndtri(np.clip(np.arange(200) / 199, 1e-7, 1 - 1e-7))
    np.testing.assert_allclose(t.forward(order[:, None])[:, 0].numpy(), expected, rtol=1e-12, atol=1e-12)
    beyond = np.array([[order[-1] + 2.0], [order[0] - 3.0]])
    np.testing.assert_allclose(t.forward(beyond)[:, 0].numpy(),
                               [expected[-1] + 2.0 / v.std(), expected[0] - 3.0 / v.std()], rtol=1e-12)


def test_quantile_ties_are_steps_that_keep_their_point_mass():
    """A zero-inflated column: 60 % zeros give a run of equal quantiles, kept as its two ends, so the inverse is flat
    on the run's scores. A standard normal in model units then decodes to the data's distribution, its point mass at
    0 included (KS against the data below the 0.99 bound of two samples of the same law; the step's share of draws that
    of its probabilities, from P_CLIP to the last zero's p_k + w s, within 4 binomial sd), and never below 0; 0 maps
    to the middle of its mass, Phi^-1 of the mean of those two; every value round-trips."""
    rng = np.random.default_rng(7)
    v = np.where(rng.uniform(size=2000) < 0.6, 0.0, rng.exponential(5.0, 2000))[:, None]
    t = Table.fit(v, [ColumnSpec("v", "continuous", transform="quantile")])
    col = t.to_dict()["columns"][0]
    assert col["knots"][:3].count(0.0) == 2 and np.all(np.diff(col["knots"][1:]) > 0)
    assert np.all(np.diff(col["scores"]) > 0)
    p = np.linspace(0, 1, 1000)  # 2,000 rows: the knots are quantiles at 1,000 p_k, spaced s = 1 / 999
    top = p[np.flatnonzero(np.quantile(v[:, 0], p) == 0)[-1]] + TIE_WIDEN / 999  # the zeros' step: [1e-7, top]
    middle = scipy.special.ndtri((1e-7 + top) / 2)
    assert t.forward([[0.0]])[0, 0].item() == pytest.approx(middle, rel=1e-9)
    m = 20_000
    decoded = t.inverse(torch.from_numpy(rng.standard_normal((m, 1)))).numpy()[:, 0]
    assert decoded.min() == 0.0
    assert scipy.stats.ks_2samp(decoded, v[:, 0]).statistic < 1.63 * math.sqrt(1 / m + 1 / len(v))
    assert (decoded == 0).mean() == pytest.approx(top, abs=4 * math.sqrt(0.25 / m))  # the step's mass
    np.testing.assert_allclose(t.inverse(t.forward(v)).numpy(), v, rtol=1e-9, atol=1e-12)


def test_quantile_map_of_rounded_values_decodes_onto_them():
    """Values kept to one decimal (most repeated): each repeated value u seen c times is a step of probability
    (c - 1 + 2 w) s (s = 1 / (n - 1), w = TIE_WIDEN; only w s at either end of the column), so a standard normal
    decodes onto the observed values with the summed probability of the steps (counted from the data here), and the
    decoded column matches the data (KS)."""
    rng = np.random.default_rng(8)
    v = np.round(rng.normal(5.0, 0.8, 150), 1)
    t = Table.fit(v[:, None], [ColumnSpec("v", "continuous", transform="quantile")])
    m = 40_000
    decoded = t.inverse(torch.from_numpy(rng.standard_normal((m, 1)))).numpy()[:, 0]
    values, counts = np.unique(v, return_counts=True)
    s = 1 / (len(v) - 1)
    steps = sum((c - 1 + 2 * TIE_WIDEN) * s for c in counts if c > 1)
    steps -= TIE_WIDEN * s * ((counts[0] > 1) + (counts[-1] > 1))  # the ends: no p below 0 or above 1
    assert np.isin(decoded, values).mean() == pytest.approx(steps, abs=4 * math.sqrt(0.25 / m))
    assert scipy.stats.ks_2samp(decoded, v).statistic < 1.63 * math.sqrt(1 / m + 1 / len(v))


def test_a_quantile_column_with_repeated_values_is_left_out_of_the_density():
    """A repeated value is a point mass, with no density in the data's units: a quantile column with one is left out
    of log_abs_det_jacobian, which is then the standardized column's -log(population sd) alone, and the note that
    elbo and nll print names it; the same column without ties stays in."""
    rng = np.random.default_rng(9)
    x = np.column_stack([np.round(rng.normal(size=200), 1), rng.normal(size=200)])
    specs = [ColumnSpec("r", "continuous", transform="quantile"), ColumnSpec("c", "continuous")]
    t = Table.fit(x, specs)
    assert t.density_columns == ["c"]
    np.testing.assert_allclose(t.log_abs_det_jacobian(x).numpy(), np.full(200, -np.log(x[:, 1].std())), rtol=1e-12)
    assert "columns r repeat values" in table_note(t) and "excluded from the data-unit density" in table_note(t)
    untied = np.column_stack([rng.normal(size=200), x[:, 1]])
    assert Table.fit(untied, specs).density_columns == ["r", "c"]
    assert "repeat values" not in table_note(Table.fit(untied, specs))


def test_categorical_entries_are_plus_minus_one_and_decode_by_argmax(table):
    x = mixed(50, 8)
    y = table.forward(x)[:, table.model_slices[5]]
    assert set(y.flatten().tolist()) == {-1.0, 1.0} and (y.sum(dim=1) == -1).all()  # one +1 among K = 3
    assert torch.equal(y.argmax(dim=1).double(), torch.as_tensor(x[:, 5]))
    noisy = table.forward(x) + 0.3 * torch.randn(50, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = noisy[:, table.model_slices[5]].argmax(dim=1).double()
    assert torch.equal(table.inverse(noisy)[:, 5], expected)


def test_missing_cells_give_nan_in_all_their_entries_and_are_ignored_by_fit():
    x = mixed(400, 9)
    holes = np.random.default_rng(10).uniform(size=x.shape) < 0.2
    x[holes] = np.nan
    t = Table.fit(x, SPECS)
    y = t.forward(x)
    assert y.shape == (400, 8) and t.sample_shape == (8,)
    for j, s in enumerate(t.model_slices):
        nan = torch.isnan(y[:, s])
        assert torch.equal(nan, torch.as_tensor(holes[:, j])[:, None].expand_as(nan))
    height = t.to_dict()["columns"][0]  # fitted on the observed cells only
    assert height["mean"] == pytest.approx(np.nanmean(x[:, 0]), rel=1e-12)
    assert height["std"] == pytest.approx(np.nanstd(x[:, 0]), rel=1e-12)
    assert torch.isfinite(t.inverse(torch.nan_to_num(y, nan=0.0))).all()  # finite y never decodes to NaN


def test_forward_dtypes_and_inputs(table):
    x = mixed(5, 11)
    assert table.forward(x).dtype == torch.float64  # numpy float64
    y32 = table.forward(torch.as_tensor(x, dtype=torch.float32))
    assert y32.dtype == torch.float32
    assert table.inverse(y32).dtype == torch.float64
    assert table.integer_columns.tolist() == [False, False, True, False, False, False, False]
    assert [s.name for s in table.specs] == [s.name for s in SPECS] and table.specs[0].transform == "standardize"
    assert table.levels is None and table.model_range is None


def test_to_dict_round_trips_through_json_and_the_registry(table):
    text = json.dumps(table.to_dict(), allow_nan=False)  # plain JSON numbers
    back = transform_from_dict(json.loads(text))
    assert isinstance(back, Table) and TRANSFORMS["table"] is Table and back.to_dict() == table.to_dict()
    x = torch.as_tensor(mixed(100, 12))
    y = table.forward(x)
    assert torch.equal(back.forward(x), y) and torch.equal(back.inverse(y), table.inverse(y))
    assert torch.equal(back.log_abs_det_jacobian(x), table.log_abs_det_jacobian(x))
    assert json.loads(text)["columns"][4] == {"name": "share", "kind": "bounded", "low": 0.0, "high": 100.0,
                                              "mean": table.to_dict()["columns"][4]["mean"],
                                              "std": table.to_dict()["columns"][4]["std"]}


def _corrupt(table, j, **changes):
    d = json.loads(json.dumps(table.to_dict()))
    d["columns"][j] = {k: v for k, v in (d["columns"][j] | changes).items() if v is not None}
    return d


@pytest.mark.parametrize("change, needle", [
    (lambda t: {"kind": "table"}, "fields kind ('table') and columns"),
    (lambda t: {"kind": "table", "columns": []}, "non-empty list"),
    (lambda t: _corrupt(t, 0, kind="ordinal"), "column 'height': unknown kind 'ordinal'"),
    (lambda t: {"kind": "table", "columns": [{"kind": "integer"}]}, "column 0: expected an object with a 'name'"),
    (lambda t: _corrupt(t, 0, std=None), "column 'height' (continuous): expected the fields kind, mean, name, std"),
    (lambda t: _corrupt(t, 0, extra=1), "got extra, kind, mean"),
    (lambda t: _corrupt(t, 0, std=0), "'std' must be a finite number > 0"),
    (lambda t: _corrupt(t, 3, mean="abc"), "'mean' must be a finite number"),
    (lambda t: _corrupt(t, 0, transform="log"), "'transform' must be one of standardize, quantile"),
    (lambda t: _corrupt(t, 1, knots=[3.0, 2.0] + t.to_dict()["columns"][1]["knots"][2:]), "'knots' must be a list"),
    (lambda t: _corrupt(t, 1, scores=[0.0]), "'scores' must be a list of at least 2"),
    (lambda t: _corrupt(t, 1, scores=[0.0, 1.0]), "'knots' and 'scores' must have equal lengths"),
    (lambda t: _corrupt(t, 2, min=95), "min <= max"),
    (lambda t: _corrupt(t, 4, low=100), "low < high"),
    (lambda t: _corrupt(t, 5, categories=["blue", "blue"]), "distinct category texts"),
    (lambda t: _corrupt(t, 6, value=None), "column 'country' (constant): expected the fields"),
    (lambda t: _corrupt(t, 1, name="height"), "repeated: 'height'"),
    (lambda t: {"kind": "table", "columns": [t.to_dict()["columns"][6]]}, "nothing to model"),
])
def test_corrupt_dicts_are_one_line_input_errors(table, change, needle):
    with pytest.raises(InputError) as err:
        transform_from_dict(change(table))
    assert needle in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("column, cell, needle", [
    (3, 0.0, "column 'weight' (positive): row 3 holds 0, not > 0"),
    (4, 100.5, "column 'share' (bounded): row 3 holds 100.5, outside the column's bounds [0, 100]"),
    (5, 3.0, "column 'color' (categorical): row 3 holds 3, not a category code 0..2"),
    (5, 0.5, "not a category code"),
    (0, math.inf, "column 'height' (continuous): row 3 holds inf, not a finite number"),
    (2, 20.5, "column 'age' (integer): row 3 holds 20.5, not an integer"),
])
def test_fit_and_forward_refuse_cells_their_kind_cannot_hold(table, column, cell, needle):
    x = mixed(10, 13)
    x[2, column] = cell
    with pytest.raises(InputError, match=needle.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        Table.fit(x, SPECS)
    if column != 2:  # forward takes dequantized, non-integral integer cells
        with pytest.raises(InputError, match=f"column '{SPECS[column].name}'"):
            table.forward(x)


@pytest.mark.parametrize("values, spec, needle", [
    ([np.nan, np.nan, np.nan], ColumnSpec("z", "continuous"), "column 'z' (continuous) has no observed value"),
    ([4.0, np.nan, np.nan], ColumnSpec("z", "positive"), "has only the value 4"),
    ([2.0, 2.0, 2.0], ColumnSpec("z", "continuous", transform="quantile"), "one value the kind constant"),
    ([1.0, 2.0, 3.0], ColumnSpec("z", "bounded", low=0), "a bounded column needs numbers low < high"),
    ([1.0, 2.0, 3.0], ColumnSpec("z", "integer", categories=["a"]), "kind integer takes no option 'categories'"),
    ([1.0, 2.0, 3.0], ColumnSpec("z", "ordinal"), "unknown kind 'ordinal'"),
    ([1.0, 2.0, 3.0], ColumnSpec("z", "constant"), "a constant column needs its value as text"),
])
def test_columns_that_cannot_be_fitted_are_named(values, spec, needle):
    with pytest.raises(InputError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        Table.fit(np.array(values)[:, None], [spec])


def test_an_integer_column_with_one_value_fits():
    t = Table.fit(np.array([[5.0], [5.0], [np.nan]]), [ColumnSpec("k", "integer")])
    assert t.inverse(torch.tensor([[-3.0], [3.0]]))[:, 0].tolist() == [5.0, 5.0]


def test_shapes_are_checked(table):
    with pytest.raises(InputError, match=r"expected a table of 7 columns \(N, 7\), got shape \(4, 6\)"):
        table.forward(np.zeros((4, 6)))
    with pytest.raises(InputError, match=r"expected model units of shape \(N, 8\), got \(4, 7\)"):
        table.inverse(torch.zeros(4, 7))
    with pytest.raises(InputError, match="codes' shape"):
        table.dequantize(mixed(4, 0), torch.zeros(4, 6))
    with pytest.raises(InputError, match=r"expected a table of 7 columns"):
        Table.fit(mixed(4, 0)[:, :6], SPECS)


def test_check_spec_fills_the_default_transform_and_keeps_the_input():
    spec = ColumnSpec("x", "continuous")
    assert check_spec(spec).transform == "standardize" and spec.transform is None
    assert check_spec(ColumnSpec("b", "bounded", low=0, high=1)).low == 0.0


def test_bounded_ends_are_finite_and_clamped():
    x = np.array([[0.0], [1.0], [0.5], [0.25]])
    t = Table.fit(x, [ColumnSpec("b", "bounded", low=0, high=1)])
    y = t.forward(x)
    assert torch.isfinite(y).all()
    logit = math.log(EPS / (1 - EPS))  # u = EPS at low: logit finite
    col = t.to_dict()["columns"][0]
    assert y[0, 0].item() == pytest.approx((logit - col["mean"]) / col["std"], rel=1e-12)
    assert t.inverse(torch.tensor([[-1e3], [1e3]]))[:, 0].tolist() == [0.0, 1.0]


# --- decimals --------------------------------------------------------------------------------------

def test_values_drawn_are_rounded_to_the_decimals_of_their_column():
    """inverse rounds to each column's decimals (the oracle: numpy's round of the unrounded inverse); a positive
    column stays > 0 (its smallest value 10^-d) and a bounded one within its bounds; no decimals: no rounding."""
    specs = [ColumnSpec("a", "continuous", decimals=1), ColumnSpec("p", "positive", decimals=2),
             ColumnSpec("b", "bounded", low=0.0, high=1.0, decimals=1), ColumnSpec("raw", "continuous")]
    x = torch.tensor([[5.1, 0.013, 0.2, 1.23456], [6.3, 2.5, 0.95, 2.5], [4.8, 0.5, 0.05, -1.0]], dtype=torch.float64)
    table = Table.fit(x, specs)
    y = torch.randn(1000, 4, generator=torch.Generator().manual_seed(0)) * 2
    unrounded = Table([c.__class__(ColumnSpec(c.spec.name, c.spec.kind, c.spec.transform, c.spec.low, c.spec.high),
                                   **{k: getattr(c, k) for k in c.fitted}) for c in table.columns]).inverse(y).numpy()
    got = table.inverse(y).numpy()
    assert np.array_equal(got[:, 0], np.round(unrounded[:, 0], 1))
    assert np.array_equal(got[:, 1], np.maximum(np.round(unrounded[:, 1], 2), 0.01)) and got[:, 1].min() > 0
    assert np.array_equal(got[:, 2], np.clip(np.round(unrounded[:, 2], 1), 0, 1))
    assert np.array_equal(got[:, 3], unrounded[:, 3])


def test_a_saved_table_from_before_decimals_still_loads_and_decimals_are_checked():
    table = Table.fit(torch.tensor([[1.5], [2.25], [0.5]], dtype=torch.float64),
                      [ColumnSpec("a", "continuous", decimals=2)])
    d = json.loads(json.dumps(table.to_dict()))
    assert d["columns"][0]["decimals"] == 2 and Table.from_dict(d).specs[0].decimals == 2
    del d["columns"][0]["decimals"]  # as models trained before this field was written
    assert Table.from_dict(d).specs[0].decimals is None
    for bad in (-1, 9, 1.5, True, "2"):
        with pytest.raises(InputError, match="decimals must be a whole number from 0 to 8"):
            check_spec(ColumnSpec("a", "continuous", decimals=bad))
    with pytest.raises(InputError, match="kind integer takes no option 'decimals'"):
        check_spec(ColumnSpec("a", "integer", decimals=1))
