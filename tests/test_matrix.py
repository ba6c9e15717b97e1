import pytest

from bench.errors import ConfigError
from bench.matrix import MAX_NAME_LENGTH, closest, expand_grid, load_matrix, parse_matrix


def test_github_actions_include_semantics():
    # The worked example from the GitHub Actions documentation.
    combos = expand_grid(
        {"fruit": ["apple", "pear"], "animal": ["cat", "dog"]},
        include=[{"color": "green"}, {"color": "pink", "animal": "cat"}, {"fruit": "apple", "shape": "circle"},
                 {"fruit": "banana"}, {"fruit": "banana", "animal": "cat"}],
        exclude=[],
    )
    assert combos == [
        {"fruit": "apple", "animal": "cat", "color": "pink", "shape": "circle"},
        {"fruit": "apple", "animal": "dog", "color": "green", "shape": "circle"},
        {"fruit": "pear", "animal": "cat", "color": "pink"},
        {"fruit": "pear", "animal": "dog", "color": "green"},
        {"fruit": "banana"},
        {"fruit": "banana", "animal": "cat"},
    ]


def test_exclude_matches_partial_combinations_before_include():
    combos = expand_grid({"model": ["a", "b"], "opt": ["x", "y"]}, include=[{"model": "a", "opt": "x", "lr": 1}],
                         exclude=[{"opt": "x"}])
    assert combos == [{"model": "a", "opt": "y"}, {"model": "b", "opt": "y"}, {"model": "a", "opt": "x", "lr": 1}]


def test_hw3_matrix_has_the_twelve_report_runs():
    matrix = load_matrix("matrices/hw3.toml")
    shapes = {(c["model"], c["optimizer"], c["n_layer"]) for c in matrix.combinations}
    assert len(matrix.combinations) == 12 == len(shapes)
    assert {("gpt1", "adamw", 4), ("lstm", "sgd", 1), ("lstm", "adamw", 2)} <= shapes


def test_no_axes_means_one_cell_of_defaults():
    matrix = parse_matrix({"defaults": {"model": "lstm"}}, default_name="m", where="m")
    assert matrix.combinations == [{}]


def test_malformed_toml_names_the_line(write_matrix):
    path = write_matrix("[defaults]\nlr = = 3\n")
    with pytest.raises(ConfigError, match="line 2"):
        load_matrix(path)


@pytest.mark.parametrize("raw, message", [
    ({"defaults": {}, "matrixx": {}}, "did you mean 'matrix'"),
    ({"matrix": {"model": "lstm"}}, "non-empty list"),
    ({"seeds": [1.5]}, "seeds"),
    ({"eval": {"hellaswagg": True}}, "did you mean 'hellaswag'"),
    ({"matrix": {"model": ["a"], "exclude": [{"model": "a"}]}}, "no cells"),
    ({"matrix": {"model": ["a"], "exlcude": [{"model": "a"}]}}, "axis 'exlcude' holds tables; did you mean 'exclude'"),
    ({"name": "a\x00b"}, r"control character '\\x00'"),
    ({"name": "a\nb"}, r"control character '\\n'"),
    ({"name": "a\tb"}, r"control character '\\t'"),
    ({"name": "x" * 300}, f"300 characters long; the limit is {MAX_NAME_LENGTH}"),
    ({"name": "../up"}, "starts with '.'"),
    ({"name": "a/b"}, "path separator"),
    ({"name": 3}, "is int, not a string"),
])
def test_bad_matrix_structure(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_matrix(raw, default_name="m", where="m.toml")


def test_a_name_at_the_limit_is_accepted():
    assert parse_matrix({"name": "x" * MAX_NAME_LENGTH}, default_name="m", where="m.toml").name == "x" * MAX_NAME_LENGTH


def test_matrix_path_that_is_a_directory_names_a_file_inside(tmp_path):
    (tmp_path / "small.toml").write_text("")
    with pytest.raises(ConfigError, match="is a directory; give a .toml file in it, e.g. small.toml"):
        load_matrix(tmp_path)


def test_matrix_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes('description = "caf\xe9"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_matrix(path)


@pytest.mark.parametrize("word, expected", [
    ("learning_rate", "; did you mean 'lr'?"),  # another framework's name: no spelling likeness
    ("num_layers", "; did you mean 'n_layer'?"),
    ("n_layr", "; did you mean 'n_layer'?"),  # a typo
    ("qqqq", ""),
])
def test_closest_knows_synonyms_and_typos(word, expected):
    assert closest(word, ["lr", "n_layer", "n_head", "seq_len"]) == expected


def test_a_synonym_is_only_suggested_when_it_is_a_candidate():
    assert closest("learning_rate", ["hellaswag", "limit"]) == ""


def test_include_name_names_its_cells_and_is_no_axis():
    matrix = parse_matrix({"seeds": [1, 2], "matrix": {"include": [{"name": "a-x-seed{seed}", "opt": "x"},
                                                                    {"name": "b", "opt": "y"}, {"opt": "z"}]}},
                          default_name="m", where="m")
    assert matrix.combinations == [{"opt": "x"}, {"opt": "y"}, {"opt": "z"}]  # name sets no config key
    assert matrix.names == ["a-x-seed{seed}", "b", None] and matrix.axes == ["opt"]


@pytest.mark.parametrize("include, problem", [
    ([{"name": "", "opt": "x"}], "must be non-empty text"),
    ([{"name": 3, "opt": "x"}], "must be non-empty text"),
    ([{"name": "same", "opt": "x"}, {"name": "same", "opt": "y"}], "several matrix cells are named 'same'"),
])
def test_include_name_must_be_text_and_unique(include, problem):
    with pytest.raises(ConfigError, match=problem):
        parse_matrix({"matrix": {"include": include}}, default_name="m", where="m")
