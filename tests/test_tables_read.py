"""Tests of gaussdiff.data.tables: tables as text, the inferred kinds of columns, columns.json, and the codes."""

import csv
import json
import math

import numpy as np
import pytest
import scipy.stats
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine

from gaussdiff.columns import ColumnSpec
from gaussdiff.data import schema, tables
from gaussdiff.data.schema import infer_schema, read_schema, schema_json, write_schema
from gaussdiff.data.tables import check_header, decode, encode, is_missing, pop_column, read_table, write_table
from gaussdiff.errors import InputError


def put(folder, text, name="t.csv"):
    """Write ``text`` (str as UTF-8, or bytes) to folder/name and return the path."""
    path = folder / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def refused(path, call, *needles):
    """Assert call() raises one InputError line naming the file and each needle, and leaves the file as it was."""
    before = path.read_bytes() if path.is_file() else None
    with pytest.raises(InputError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and str(path) in message, message
    for needle in needles:
        assert needle in message, (needle, message)
    assert (path.read_bytes() if path.is_file() else None) == before
    return message


# --- reading tables ------------------------------------------------------------------------------

def test_read_table_keeps_header_cells_and_file_line_numbers(tmp_path):
    path = put(tmp_path, "a, b ,c\r\n\r\n1, x ,2.5\r\n   \r\n3,y,\r\n,,\r\n")
    raw = read_table(path)
    assert raw.header == ["a", "b", "c"]
    assert raw.rows == [["1", "x", "2.5"], ["3", "y", ""], ["", "", ""]]  # a line of commas: a row, all missing
    assert raw.lines == [3, 5, 6]
    assert raw.column(1) == ["x", "y", ""]


def test_read_table_byte_order_mark_and_semicolons_with_decimal_commas(tmp_path):
    text = "height;colour;n\n1,5;\"red, dark\";3\n-2,25;blue;4\n7;a,b;5\n"
    raw = read_table(put(tmp_path, b"\xef\xbb\xbf" + text.encode()))
    assert raw.header == ["height", "colour", "n"]  # the mark is not part of the first name
    assert raw.rows == [["1.5", "red, dark", "3"], ["-2.25", "blue", "4"], ["7", "a,b", "5"]]
    plain = read_table(put(tmp_path, "x,y\n1,2\n3,4\n", "plain.csv"))
    marked = read_table(put(tmp_path, b"\xef\xbb\xbfx,y\n1,2\n3,4\n", "marked.csv"))
    assert (plain.header, plain.rows) == (marked.header, marked.rows)


def test_read_table_quoted_cells_with_commas_quotes_and_line_breaks(tmp_path):
    path = put(tmp_path, 'name,"a, b",v\n"Smith, J.","say ""hi""",1\n"two\nlines",z,2\nw,q,3\n')
    raw = read_table(path)
    assert raw.header == ["name", "a, b", "v"]
    assert raw.rows == [["Smith, J.", 'say "hi"', "1"], ["two\nlines", "z", "2"], ["w", "q", "3"]]
    assert raw.lines == [2, 3, 5]  # a row starts on the line after the two-line cell


@pytest.mark.parametrize("content, needles", [
    (None, ["no such file"]),
    (b"a,b\n\xff\xfe,1\n2,3\n", ["not UTF-8"]),
    ("", ["is empty"]),
    ("\n  \n\n", ["is empty"]),
    ("a,b,c\n", ["header line but no data rows"]),
    ("a,b,c\n\n1,2,3\n", ["1 data row", "line 3", "at least 2"]),
    ("a,b,c,d\n1,2,3,4\n5,6,7,8\n\n\n\n1,2,3\n", ["line 7 has 3 cells, the header has 4"]),
    ("a,b,c\n1,2,3\n4,5,6,\n", ["line 3 has 4 cells, the header has 3"]),
    ("a,b,a\n1,2,3\n4,5,6\n", ["'a'", "more than once"]),
    ("a,,c\n1,2,3\n4,5,6\n", ["column(s) 2", "no name"]),
    ("1.5,2,3\n1,2,3\n4,5,6\n", ["no header line: the first line holds numbers"]),
    ('a,b\n1,"2\n3,4\n', ["line 3", "unexpected end of data"]),
])
def test_read_table_refuses_bad_files(tmp_path, content, needles):
    path = tmp_path / "t.csv" if content is None else put(tmp_path, content)
    refused(path, lambda: read_table(path), *needles)


def test_read_table_refuses_a_directory(tmp_path):
    folder = tmp_path / "d.csv"
    folder.mkdir()
    refused(folder, lambda: read_table(folder), "is a directory")


# --- cells -----------------------------------------------------------------------------------------

def test_missing_tokens():
    for cell in ["", "  ", "NA", "na", "NaN", "nan", "N/A", "n/a", "NULL", "null", "None", " none "]:
        assert is_missing(cell), cell
    for cell in ["0", "n", "-", "nana", "missing", "?", "0.0", "NAN1"]:
        assert not is_missing(cell), cell


def test_numbers_are_finite_floats_without_underscores():
    assert tables.parse_number(" -1.5e3 ") == -1500.0 and tables.parse_number("7") == 7.0
    for text in ["inf", "-Infinity", "1e999", "1_000", "0x10", "abc", "1,5"]:
        assert tables.parse_number(text) is None, text


# --- inference -----------------------------------------------------------------------------------

def infer_text(tmp_path, text):
    return infer_schema(read_table(put(tmp_path, text)))


def test_inference_rules(tmp_path):
    rows = ["c,k,two,cat,mix,int,gap",
            "FR,9,0.5,red,1,3,1.5",
            "FR,10,-1,blue,x,4.0,",
            "FR,9,0.5,red,y,5,NA",
            "fr,9,-1,green,z,-2,2.25",
            "FR,10,0.5,red,w,3,0.75"]
    specs = infer_text(tmp_path, "\n".join(rows) + "\n")
    kinds = {s.name: s for s in specs}
    assert kinds["c"] == ColumnSpec("c", "categorical", categories=["FR", "fr"])
    assert kinds["k"] == ColumnSpec("k", "categorical", categories=["9", "10"])  # numbers sorted by value
    assert kinds["two"] == ColumnSpec("two", "categorical", categories=["-1", "0.5"])
    assert kinds["cat"] == ColumnSpec("cat", "categorical", categories=["blue", "green", "red"])
    assert kinds["mix"] == ColumnSpec("mix", "categorical", categories=["1", "w", "x", "y", "z"])  # 1 of 5 a number
    assert kinds["int"] == ColumnSpec("int", "integer")
    assert kinds["gap"] == ColumnSpec("gap", "continuous", transform="standardize", decimals=2)  # gaps ignored


def test_inference_constant_and_equal_numbers(tmp_path):
    specs = infer_text(tmp_path, "c,n,v\nFR,7,1\nFR,7.0,2\nNA,,3\nFR,7,1.5\n")
    assert specs[0] == ColumnSpec("c", "constant", value="FR")
    assert specs[1] == ColumnSpec("n", "constant", value="7")  # 7 and 7.0 are one value
    assert specs[2] == ColumnSpec("v", "continuous", transform="standardize", decimals=1)


def test_inference_merges_equal_numbers_into_one_category(tmp_path):
    specs = infer_text(tmp_path, "k\n1\n1.0\n2\n2\n")
    assert specs[0] == ColumnSpec("k", "categorical", categories=["1", "2"])


def test_inference_refuses_an_all_missing_column(tmp_path):
    path = put(tmp_path, "a,b\n1,\n2,NA\n3,null\n")
    refused(path, lambda: infer_schema(read_table(path)), "column 'b'", "every cell is missing")


def test_inference_refuses_text_in_a_mostly_numeric_column(tmp_path):
    path = put(tmp_path, "a,b\n1,1.5\n2,2.5\n3,abc\n4,x\n")  # 2 of 4 numbers: at least half
    message = refused(path, lambda: infer_schema(read_table(path)), "column 'b', line 4: 'abc' is not a number",
                      "categorical", "--schema")
    assert message.count(str(path)) == 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_skewness_is_scipy_default_and_picks_the_transform(tmp_path, seed):
    rng = np.random.default_rng(seed)
    for values, skewed in [(rng.normal(size=300), False), (rng.exponential(size=300), True),
                           (-rng.lognormal(size=300), True), (rng.uniform(size=300), False)]:
        assert schema.skewness(values) == pytest.approx(scipy.stats.skew(values), rel=1e-12, abs=1e-12)
        assert (abs(scipy.stats.skew(values)) > 1) == skewed  # these samples are clearly on one side of 1
        text = "v\n" + "".join(f"{float(v)!r}\n" for v in values)
        spec, = infer_text(tmp_path, text)
        assert spec == ColumnSpec("v", "continuous", transform="quantile" if skewed else "standardize")


def _expected(x):
    """The inference rules applied to a float column, computed with numpy and scipy."""
    distinct = np.unique(x)
    if distinct.size == 1:
        return "constant", None
    if distinct.size == 2:
        return "categorical", None
    if np.all(x == np.floor(x)):
        return "integer", None
    texts = [repr(float(v)) for v in x]  # as the test writes them
    no_places = any("e" in t for t in texts) or max(len(t.partition(".")[2]) for t in texts) > 8
    tied = 1 - distinct.size / x.size >= 0.1  # a tenth of the cells repeat another's value
    return "continuous", "quantile" if abs(scipy.stats.skew(x)) > 1 or (tied and no_places) else "standardize"


@pytest.mark.parametrize("load", [load_iris, load_wine, load_diabetes, load_breast_cancer])
def test_inference_on_scikit_learn_tables(tmp_path, load):
    bunch = load()
    path = tmp_path / "t.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(bunch.feature_names)
        writer.writerows([[repr(float(v)) for v in row] for row in bunch.data])
    specs = infer_schema(read_table(path))
    assert [s.name for s in specs] == list(bunch.feature_names)
    for j, spec in enumerate(specs):
        assert (spec.kind, spec.transform) == _expected(bunch.data[:, j]), spec
    kinds = {s.name: s.kind for s in specs}
    if load is load_iris:
        assert set(kinds.values()) == {"continuous"}
    if load is load_diabetes:
        sex = next(s for s in specs if s.name == "sex")
        assert sex.kind == "categorical" and [float(c) for c in sex.categories] == sorted(set(bunch.data[:, 1]))
    if load is load_wine:
        assert kinds["magnesium"] == kinds["proline"] == "integer"


# --- columns.json ----------------------------------------------------------------------------------

HEADER = ["age", "income", "x", "share", "color", "country"]
FULL = {"format": "gaussdiff-columns", "version": 1, "columns": [
    {"name": "age", "kind": "integer"}, {"name": "income", "kind": "positive"},
    {"name": "x", "kind": "continuous", "transform": "quantile"},
    {"name": "share", "kind": "bounded", "low": 0, "high": 100},
    {"name": "color", "kind": "categorical", "categories": ["blue", "red"]},
    {"name": "country", "kind": "constant", "value": "FR"}]}
SPECS = [ColumnSpec("age", "integer"), ColumnSpec("income", "positive"),
         ColumnSpec("x", "continuous", transform="quantile"), ColumnSpec("share", "bounded", low=0.0, high=100.0),
         ColumnSpec("color", "categorical", categories=["blue", "red"]), ColumnSpec("country", "constant", value="FR")]


def test_read_schema_of_the_documented_example(tmp_path):
    path = put(tmp_path, json.dumps(FULL), "columns.json")
    assert list(read_schema(path, HEADER).values()) == SPECS
    bare = put(tmp_path, json.dumps(FULL["columns"][:2]), "bare.json")  # just the list, and a subset
    assert read_schema(bare, HEADER) == {"age": SPECS[0], "income": SPECS[1]}


def test_write_schema_reads_back_and_is_the_documented_json(tmp_path):
    path = tmp_path / "columns.json"
    write_schema(path, SPECS)
    document = json.loads(path.read_text())
    assert document == json.loads(json.dumps(FULL)) == schema_json(SPECS)
    assert list(read_schema(path, HEADER).values()) == SPECS
    assert len(path.read_text().splitlines()) == len(SPECS) + 6  # one column a line, easy to edit


@pytest.mark.parametrize("document, needles", [
    ("{not json", ["not a JSON file"]),
    ({"columns": [{"name": "agee", "kind": "integer"}, {"name": "colour", "kind": "categorical"}]},
     ["'agee'", "'colour'", "does not have", "age, income"]),
    ([{"name": "age", "kind": "number"}], ["'age'", "unknown kind 'number'", "continuous"]),
    ([{"name": "age", "kind": "integer", "low": 0}], ["'age'", "kind integer takes no options, not low"]),
    ([{"name": "x", "kind": "continuous", "categories": ["a"]}],
     ["'x'", "takes only transform, decimals, not categories"]),
    ([{"name": "x", "kind": "continuous", "transform": "log"}], ["'x'", "unknown transform 'log'"]),
    ([{"name": "share", "kind": "bounded", "low": 0}], ["'share'", "needs 'high'"]),
    ([{"name": "share", "kind": "bounded", "low": 5, "high": 5}], ["'share'", "must be below high"]),
    ([{"name": "color", "kind": "categorical", "categories": ["a", "b", "a"]}], ["'color'", "'a' repeat"]),
    ([{"name": "color", "kind": "categorical", "categories": []}], ["'color'", "non-empty list"]),
    ([{"name": "age", "kind": "integer"}, {"name": "age", "kind": "continuous"}], ["'age'", "more than once"]),
    ([{"kind": "integer"}], ["entry 1 of \"columns\"", "\"name\""]),
    ({"format": "other", "columns": []}, ["format 'other'"]),
    ({"version": 2, "columns": []}, ["version 2"]),
    ({"colums": []}, ["\"columns\" list"]),
    ({"columns": [], "note": 1}, ["unknown field(s) 'note'"]),
])
def test_read_schema_refuses_bad_files(tmp_path, document, needles):
    path = put(tmp_path, document if isinstance(document, str) else json.dumps(document), "s.json")
    refused(path, lambda: read_schema(path, HEADER), *needles)


def test_schema_options_left_out_are_inferred_from_the_data(tmp_path):
    raw = read_table(put(tmp_path, "v,c,k,w\n1.5,FR,b,2\n-2,FR,a,10.5\n1e3,FR,c,3\n"))
    schema = put(tmp_path, json.dumps([{"name": "v", "kind": "continuous"}, {"name": "c", "kind": "constant"},
                                       {"name": "w", "kind": "categorical"}]), "s.json")
    specs = infer_schema(raw, read_schema(schema, raw.header))
    assert specs == [ColumnSpec("v", "continuous", transform="standardize"), ColumnSpec("c", "constant", value="FR"),
                     ColumnSpec("k", "categorical", categories=["a", "b", "c"]),
                     ColumnSpec("w", "categorical", categories=["2", "3", "10.5"])]


def test_schema_keeps_mostly_numeric_text_as_categories(tmp_path):
    path = put(tmp_path, "b\n1\n2\nabc\n")
    raw = read_table(path)
    specs = infer_schema(raw, {"b": ColumnSpec("b", "categorical")})  # what the inference error advises
    assert specs == [ColumnSpec("b", "categorical", categories=["1", "2", "abc"])]


def test_schema_constant_of_a_varying_column_is_refused(tmp_path):
    path = put(tmp_path, "c\nFR\nDE\nFR\n")
    refused(path, lambda: infer_schema(read_table(path), {"c": ColumnSpec("c", "constant")}),
            "column 'c'", "constant", "2 different values (DE, FR)")


# --- codes ---------------------------------------------------------------------------------------

MIXED = ("n,x,color,k,c,z,p,b\n"
         "3,5.1,red,1,FR,7,0.25,0\n"
         "4.0,-0.1,blue,2.0,FR,7.0,1e3,100\n"
         "NA,,NA,,FR,,null,\n"
         "-2,3.14159,\"dark, red\",1,fr_not,7,2,50.5\n")
MIXED_SPECS = [ColumnSpec("n", "integer"), ColumnSpec("x", "continuous", transform="standardize"),
               ColumnSpec("color", "categorical", categories=["blue", "dark, red", "red"]),
               ColumnSpec("k", "categorical", categories=["1", "2"]), ColumnSpec("c", "categorical",
                                                                                  categories=["FR", "fr_not"]),
               ColumnSpec("z", "constant", value="7"), ColumnSpec("p", "positive"),
               ColumnSpec("b", "bounded", low=0.0, high=100.0)]


def test_encode_gives_the_documented_codes(tmp_path):
    codes = encode(read_table(put(tmp_path, MIXED)), MIXED_SPECS)
    nan = math.nan
    expected = np.array([[3, 5.1, 2, 0, 0, 7, 0.25, 0],
                         [4, -0.1, 0, 1, 0, 7, 1000, 100],
                         [nan, nan, nan, nan, 0, nan, nan, nan],
                         [-2, 3.14159, 1, 0, 1, 7, 2, 50.5]])
    assert codes.dtype == np.float64 and codes.shape == (4, 8)
    np.testing.assert_array_equal(codes, expected)  # NaN where NaN


def test_encode_a_text_constant_is_zero(tmp_path):
    raw = read_table(put(tmp_path, "c,v\nFR,1\nFR,2\n"))
    np.testing.assert_array_equal(encode(raw, [ColumnSpec("c", "constant", value="FR"), ColumnSpec("v", "integer")]),
                                  [[0, 1], [0, 2]])


def test_encode_then_decode_gives_back_the_cells(tmp_path):
    raw = read_table(put(tmp_path, MIXED))
    back = decode(encode(raw, MIXED_SPECS), MIXED_SPECS)
    for row, out in zip(raw.rows, back):
        for cell, text, spec in zip(row, out, MIXED_SPECS):
            if is_missing(cell):
                assert text == ""
            elif spec.kind in ("categorical",) and tables.parse_number(cell) is None:
                assert text == cell
            else:  # numbers as values; continuous ones at float32 precision, as written
                assert np.float32(float(text)) == np.float32(float(cell)), (cell, text)


def test_decode_writes_each_kind_as_documented():
    specs = [ColumnSpec("n", "integer"), ColumnSpec("x", "continuous", transform="quantile"),
             ColumnSpec("color", "categorical", categories=["blue", "red"]), ColumnSpec("c", "constant", value="FR"),
             ColumnSpec("p", "positive")]
    codes = np.array([[3.0, 0.1, 1, 0, 1e-8], [-12.0, 1 / 3, 0, 0, 123456.789], [math.nan] * 5])
    assert decode(codes, specs) == [["3", "0.1", "red", "FR", "1e-08"],
                                    ["-12", "0.33333334", "blue", "FR", "123456.79"],
                                    ["", "", "", "", ""]]
    for text in ("0.33333334", "123456.79"):  # the shortest text of that float32
        assert str(np.float32(float(text))) == text


def test_decode_numbers_are_numpys_float32_text():
    rng = np.random.default_rng(0)
    values = rng.normal(size=2000) * 10.0 ** rng.integers(-30, 30, size=2000)
    out = decode(values[:, None], [ColumnSpec("x", "positive")])
    assert [row[0] for row in out] == [str(np.float32(v)) for v in values]
    assert all(np.float32(float(row[0])) == np.float32(v) for row, v in zip(out, values))


@pytest.mark.parametrize("cell, spec, needles", [
    ("abc", ColumnSpec("v", "continuous", transform="standardize"), ["column 'v', line 4: 'abc' is not a number"]),
    ("2.5", ColumnSpec("v", "integer"), ["column 'v', line 4: 2.5 is not a whole number"]),
    ("0", ColumnSpec("v", "positive"), ["column 'v', line 4: 0 is not > 0"]),
    ("-3", ColumnSpec("v", "positive"), ["column 'v', line 4: -3 is not > 0"]),
    ("100.5", ColumnSpec("v", "bounded", low=0.0, high=100.0), ["column 'v', line 4: 100.5 is outside", "[0, 100]"]),
    ("green", ColumnSpec("v", "categorical", categories=["blue", "red"]),
     ["column 'v', line 4: category 'green' is not among the column's categories (blue, red)"]),
    ("DE", ColumnSpec("v", "constant", value="FR"), ["column 'v', line 4: 'DE' differs from the value 'FR'"]),
    ("8", ColumnSpec("v", "constant", value="7"), ["column 'v', line 4: '8' differs from the value '7'"]),
])
def test_encode_refuses_cells_the_kind_does_not_allow(tmp_path, cell, spec, needles):
    ok = {"continuous": "1", "integer": "1", "positive": "1", "bounded": "1", "categorical": "red", "constant": "7"}
    fine = spec.value if spec.kind == "constant" else ok[spec.kind]
    path = put(tmp_path, f"u,v\n1,{fine}\n\n2,{cell}\n3,NA\n")
    refused(path, lambda: encode(read_table(path), [ColumnSpec("u", "integer"), spec]), *needles)


def test_encode_needs_the_specs_of_its_columns(tmp_path):
    raw = read_table(put(tmp_path, "a,b\n1,2\n3,4\n"))
    with pytest.raises(ValueError, match="check_header"):
        encode(raw, [ColumnSpec("b", "integer"), ColumnSpec("a", "integer")])


# --- headers, label columns, writing -------------------------------------------------------------

def test_check_header_reorders_by_name_and_names_what_differs(tmp_path):
    path = put(tmp_path, "b,a,c\n1,2,3\n4,5,6\n")
    raw = read_table(path)
    assert check_header(raw, ["b", "a", "c"], "the model's") is raw
    same = check_header(raw, ["a", "b", "c"], "the model's")
    assert same.header == ["a", "b", "c"] and same.rows == [["2", "1", "3"], ["5", "4", "6"]]
    assert same.lines == raw.lines
    refused(path, lambda: check_header(raw, ["a", "b", "d", "e"], "the model's"),
            "the model's", "missing d, e", "unexpected c")


def test_pop_column_by_name_or_number(tmp_path):
    path = put(tmp_path, "a,label,b\n1,x,2\n3,y,4\n")
    raw = read_table(path)
    for column in ("label", 1, "1"):
        rest, values = pop_column(raw, column)
        assert rest.header == ["a", "b"] and rest.rows == [["1", "2"], ["3", "4"]] and values == ["x", "y"]
    assert raw.header == ["a", "label", "b"]  # the table itself is left as it was
    refused(path, lambda: pop_column(raw, "lab"), "no label column 'lab'", "a, label, b")
    one = put(tmp_path, "y\n1\n2\n", "one.csv")
    refused(one, lambda: pop_column(read_table(one), "y"), "only column")


def test_write_table_quotes_and_reads_back(tmp_path):
    path = put(tmp_path, "old content\n", "out.csv")
    header = ["name", "a, b", "v"]
    rows = [["Smith, J.", 'say "hi"', "1"], ["two\nlines", "", "2.5"]]
    write_table(path, header, rows)
    assert path.read_text() == 'name,"a, b",v\n"Smith, J.","say ""hi""",1\n"two\nlines",,2.5\n'
    raw = read_table(path)
    assert (raw.header, raw.rows) == (header, rows)
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]  # no temporary file left


def test_write_table_refuses_a_directory_and_a_missing_folder(tmp_path):
    folder = tmp_path / "d.csv"
    folder.mkdir()
    refused(folder, lambda: write_table(folder, ["a"], [["1"]]), "is a directory")
    missing = tmp_path / "nowhere" / "t.csv"
    refused(missing, lambda: write_table(missing, ["a"], [["1"]]), "does not exist")


def test_decimals_are_the_most_places_a_column_shows(tmp_path):
    """Rounded measurements keep their places (1.5, 2.25 -> 2; a decimal-comma file's 3,125 -> 3); a column with an
    exponent, or more than MAX_DECIMALS places (computed values), is not rounded: None. A schema may set decimals, or
    leave them to the data."""
    assert schema.decimals(["1.5", "2.25", "-3", " 0.10 "]) == 2
    assert schema.decimals(["3,125", "1,5"]) == 3
    assert schema.decimals(["1.5", "2e-3"]) is None and schema.decimals(["0.123456789"]) is None
    specs = infer_text(tmp_path, "a;b\n1,5;2\n2,25;3\n0,5;7\n")
    assert specs[0].decimals == 2
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"columns": [{"name": "a", "kind": "positive"}]}))
    raw = read_table(put(tmp_path, "a,b\n1.5,2\n2.25,3\n0.5,7\n"))
    assert infer_schema(raw, read_schema(path, raw.header))[0].decimals == 2  # left to the data
    path.write_text(json.dumps({"columns": [{"name": "a", "kind": "positive", "decimals": 4}]}))
    assert infer_schema(raw, read_schema(path, raw.header))[0].decimals == 4
    path.write_text(json.dumps({"columns": [{"name": "a", "kind": "continuous", "decimals": "two"}]}))
    with pytest.raises(InputError, match="decimals must be a whole number from 0 to 8"):
        read_schema(path, raw.header)
