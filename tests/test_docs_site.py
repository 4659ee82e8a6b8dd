"""The docs site's own checks: that each can fail, and (once built) that the site is complete.

These need the docs toolchain (the ``docs`` extra); ``nox -s docs`` runs them
after building the site into docs/_build/html. The built-site tests skip,
saying so, when no built site is there.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SITE = DOCS / "_build" / "html"
sys.path[:0] = [str(DOCS), str(DOCS / "_ext")]

pytest.importorskip("sphinx", reason="the docs toolchain (pip install -e '.[docs]') is not installed")
pytest.importorskip("docutils", reason="the docs toolchain (pip install -e '.[docs]') is not installed")

import check_site  # noqa: E402
import gen_golden  # noqa: E402
import gen_matrix  # noqa: E402
import gen_performance  # noqa: E402
import xdrop_docs  # noqa: E402
from docutils import nodes  # noqa: E402

import xdrop  # noqa: E402

needs_site = pytest.mark.skipif(not (SITE / "index.html").exists(), reason="docs not built (run nox -s docs)")


# --- the checks can fail -------------------------------------------------------------------------


def test_api_check_flags_missing_docstring_and_entry() -> None:
    def undocumented(x: int) -> int:
        return x

    class Bare:
        pass

    names = [("xdrop.undocumented", undocumented), ("xdrop.Bare", Bare), ("xdrop.dropout", xdrop.dropout)]
    problems = xdrop_docs.api_problems(names, documented={"xdrop.dropout", "xdrop.Bare"})
    assert problems == [
        "public name xdrop.undocumented has no docstring",
        "public name xdrop.undocumented is missing from the API reference: add it to docs/api.md",
        "public name xdrop.Bare has no docstring",
    ]


def test_api_check_sees_a_dataclass_without_docstring() -> None:
    from dataclasses import dataclass

    @dataclass
    class Record:
        a: int

    assert xdrop_docs.api_problems([("xdrop.Record", Record)], {"xdrop.Record"}) == [
        "public name xdrop.Record has no docstring"
    ]


def test_public_names_cover_all_and_submodules() -> None:
    names = {q for q, _ in xdrop_docs.public_names()}
    assert {f"xdrop.{n}" for n in xdrop.__all__} <= names
    assert {"xdrop.random.philox4x32", "xdrop.cs231n.dropout_forward"} <= names


def test_untested_python_block_is_flagged() -> None:
    doc = nodes.section()
    plain = nodes.literal_block("x = 1", "x = 1", language="python")
    tested = nodes.literal_block(">>> 1", ">>> 1", language="python", testnodetype="doctest")
    shell = nodes.literal_block("pip install xdrop", "pip install xdrop", language="bash")
    doc += [plain, tested, shell]
    assert xdrop_docs.untested_examples(doc) == [plain]


BAD_PAGE = """# A page
```bash
pip install something
```

% not run:
```python
x = 1
```

```{code-block} python
y = 2
```

  ````text
  ```
  still inside
  ````
"""

GOOD_PAGE = """# A page
% not run: installs packages
```bash
pip install something
```

<!-- not run: needs a GPU -->
```python
x = 1
```

```{doctest}
>>> 1
1
```

```{testcode}
print(2)
```

```{testoutput}
2
```

```{toctree}
index
```
"""


def test_code_block_check_flags_unmarked_and_reasonless_blocks() -> None:
    assert xdrop_docs.unmarked_code_blocks(BAD_PAGE) == [
        (2, "bash"),
        (7, "python"),
        (11, "{code-block} python"),
        (15, "text"),
    ]
    assert xdrop_docs.unmarked_code_blocks(GOOD_PAGE) == []
    assert xdrop_docs.unmarked_code_blocks("```python\nx = 1\n```\n", frozenset({"python"})) == []


@pytest.mark.parametrize(
    "page", [*sorted(DOCS.glob("*.md")), ROOT / "README.md", ROOT / "CONTRIBUTING.md"], ids=lambda p: p.name
)
def test_every_code_block_is_run_or_marked_not_run(page: Path) -> None:
    # README.md's python blocks are run by test_readme_python_examples_run below.
    run = frozenset({"python"}) if page.name == "README.md" else frozenset()
    assert xdrop_docs.unmarked_code_blocks(page.read_text(), run) == []


def readme_python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return [m.group(1) for m in re.finditer(r"^```python\n(.*?)^```", text, re.MULTILINE | re.DOTALL)]


def test_readme_python_examples_run() -> None:
    blocks = readme_python_blocks()
    assert blocks, "README.md has no python block: update this test"
    pytest.importorskip("torch", reason="README's examples train a PyTorch model and compare NumPy with PyTorch")
    pytest.importorskip("jax", reason="README's JAX example trains with jax.jit")
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})


def test_offline_check_flags_external_assets(tmp_path: Path) -> None:
    (tmp_path / "_static" / "mathjax").mkdir(parents=True)
    (tmp_path / "_static" / "mathjax" / "tex-chtml.js").write_text("")
    (tmp_path / "ok.html").write_text(
        '<html><script src="_static/x.js"></script><a href="https://example.org/">a link is fine</a></html>'
    )
    assert check_site.check_offline_assets(tmp_path) == []
    (tmp_path / "bad.html").write_text(
        '<html><script src="https://cdn.example.org/mathjax.js"></script>'
        '<link rel="stylesheet" href="//fonts.example.org/f.css"></html>'
    )
    (tmp_path / "_static" / "bad.css").write_text("@font-face { src: url('https://fonts.example.org/a.woff') }")
    problems = check_site.check_offline_assets(tmp_path)
    assert len(problems) == 3, problems
    assert all("another host" in p for p in problems)


def test_dom_collector_counts_typeset_math_and_raw_tex() -> None:
    typeset = check_site.parse(
        '<p><span class="math"><mjx-container jax="CHTML"><mjx-math>q</mjx-math></mjx-container></span></p>'
    )
    raw = check_site.parse(r'<p><span class="math">\(\frac{1}{q}\)</span></p>')
    assert (typeset.math_elements, typeset.mjx, "".join(typeset.text)) == (1, 1, "")
    assert (raw.math_elements, raw.mjx) == (1, 0)
    assert "\\frac" in "".join(raw.text)


def test_dom_collector_reads_search_results() -> None:
    dom = check_site.parse(
        '<a href="index.html">home</a><ul class="search"><li><a href="stream-spec.html?highlight=philox">'
        "Stream spec</a></li></ul>"
    )
    assert dom.search_links == ["stream-spec.html?highlight=philox"]


# --- the generators read what they claim ------------------------------------------------------


def test_golden_packing_matches_the_spec_bit_order() -> None:
    import numpy as np

    mask = np.array([True, False, False, False, False, True, False, True, True])  # 1000 0101 1...
    assert gen_golden.packed_bits(mask) == "8580"


def test_matrix_normalize_reads_run_output_and_other_layouts() -> None:
    run_like = {
        "results": {
            "numpy": {"equivalence": {"passed": True, "figure": "0 bits differ"}},
            "cupy": {"skipped": "not installed"},
        }
    }
    assert gen_matrix.normalize(run_like) == {
        "numpy": {"equivalence": (True, "0 bits differ")},
        "cupy": "not installed",
    }
    rows = [{"backend": "torch", "gradient": {"ok": False, "summary": "max err 1"}}, {"backend": "jax", "reason": "x"}]
    assert gen_matrix.normalize({"backends": rows}) == {"torch": {"gradient": (False, "max err 1")}, "jax": "x"}
    text, failures = gen_matrix.render({"source": "test", **{"results": rows}}, {"cpu": "test"})
    assert failures == ["backend matrix: torch / gradient fails: max err 1"]
    assert "**FAIL**: max err 1" in text


VERIFY_JSON = {
    "backends": {
        "numpy": {
            "status": "pass",
            "reason": None,
            "device": "cpu",
            "dtypes": ["float32"],
            "cells": {
                "equivalence": {"passed": True, "figure": "0/64 bits differ", "detail": {}, "seconds": 0.1},
                "gradient": {"passed": True, "figure": "0 bits", "detail": {}, "seconds": 0.1},
            },
        },
        "cupy": {"status": "skipped", "reason": "not installed (cupy)", "device": None, "dtypes": [], "cells": {}},
    }
}


def test_matrix_reads_verify_json_a_null_reason_is_not_a_skip() -> None:
    """The bug the built page had: every row with a "reason" key, even null, showed as "not run: None"."""
    assert gen_matrix.normalize(VERIFY_JSON) == {
        "numpy": {"equivalence": (True, "0/64 bits differ"), "gradient": (True, "0 bits")},
        "cupy": "not installed (cupy)",
    }
    text, failures = gen_matrix.render({"source": "test", **VERIFY_JSON}, {"cpu": "test"})
    assert failures == [] and "not run: None" not in text
    assert "| `numpy` | PASS: 0/64 bits differ | PASS: 0 bits |" in text
    assert "| `cupy` | not run: not installed (cupy) |" in text


def _matrix_html(*rows: list[str]) -> str:
    cells = "".join("<tr>" + "".join(f"<td><p>{c}</p></td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr><th>backend</th><th>equivalence</th></tr></thead><tbody>{cells}</tbody></table>"


def test_site_check_fails_when_the_page_says_not_run_but_verify_passed() -> None:
    good = _matrix_html(["<code>numpy</code>", "PASS: 0 bits", "PASS: 0 bits"], ["<code>cupy</code>", "not run: x", ""])
    assert check_site.check_matrix(good, VERIFY_JSON) == []
    elsewhere = _matrix_html(["<code>numpy</code>", "not run: None", ""])  # a later table is not the matrix
    assert check_site.check_matrix(good + elsewhere, VERIFY_JSON) == []
    assert check_site.check_matrix(elsewhere + good, VERIFY_JSON) != []
    bad = _matrix_html(["<code>numpy</code>", "not run: None", ""], ["<code>cupy</code>", "not run: x", ""])
    assert check_site.check_matrix(bad, VERIFY_JSON) == [
        "backend matrix: verify says numpy passed, the page says: not run: None"
    ]
    missing = _matrix_html(["<code>cupy</code>", "PASS: 0 bits", "PASS"])
    assert check_site.check_matrix(missing, VERIFY_JSON) == [
        "backend matrix: no row for numpy (verify says pass)",
        "backend matrix: verify skipped cupy, the page says: PASS: 0 bits PASS",
    ]


def test_performance_groups_rows_by_the_library_that_ran_them() -> None:
    rows = [
        {
            "backend": "numpy",
            "name": "xdrop",
            "direction": "forward",
            "dtype": "float32",
            "size": 64,
            "ns_per_element": 2.0,
        },
        {
            "backend": "numpy",
            "name": "numpy-generator",
            "direction": "forward",
            "dtype": "float32",
            "size": 64,
            "ns_per_element": 4.0,
        },
        {
            "backend": "numpy",
            "name": "torch-cpu",
            "direction": "forward",
            "dtype": "float32",
            "size": 64,
            "ns_per_element": 1.0,
        },
        {
            "backend": "torch",
            "name": "xdrop",
            "direction": "forward",
            "dtype": "float32",
            "size": 64,
            "ns_per_element": 3.0,
        },
        {
            "backend": "torch",
            "name": "torch",
            "direction": "forward",
            "dtype": "float32",
            "size": 64,
            "ns_per_element": 1.5,
        },
    ]
    assert [gen_performance.owner(r) for r in rows] == ["numpy", "numpy", "torch", "torch", "torch"]
    assert gen_performance.summary(rows) == [
        ("numpy", "forward", "numpy-generator", 64, 2.0, 4.0),
        ("torch", "forward", "torch", 64, 3.0, 1.5),
    ]
    machine = {"meta": {"cpu_count": 2, "machine": "x86_64"}, "devices": {"cupy": "GPU X"}}
    assert gen_performance.machine_name(machine) == "GPU X, 2 CPU cores, x86_64"


def test_performance_records_and_plot(tmp_path: Path) -> None:
    data = {"machine": {"cpu": "test"}, "results": [{"backend": "numpy", "size": 2**16, "ns_per_element": 3.0}]}
    rows = gen_performance.records(data)
    assert rows == data["results"]
    assert gen_performance.records({"something": 1}) is None
    assert gen_performance.plot(rows, tmp_path / "p.png", "t")
    assert (tmp_path / "p.png").stat().st_size > 0
    assert not gen_performance.plot([{"backend": "numpy"}], tmp_path / "q.png", "t")


def _pair_rows() -> list[dict]:
    rows = []
    for size, (x, t, xl, tl) in {64: (2.0, 4.0, 3.0, 3.0), 2**20: (1.0, 8.0, 1.0, 4.0)}.items():
        for name, ns, direction in [
            ("xdrop", x, "forward"),
            ("torch", t, "forward"),
            ("xdrop-layer", xl, "forward"),
            ("torch-layer", tl, "forward"),
            ("xdrop", 2 * x, "backward"),
            ("torch", t, "backward"),
        ]:
            rows.append(
                {"backend": "torch", "name": name, "direction": direction, "dtype": "float32", "size": size}
                | {"ns_per_element": ns}
            )
    return rows


def test_performance_compares_the_layer_with_nn_dropout_and_tabulates_each_direction() -> None:
    pairs = gen_performance.summary(_pair_rows())
    assert ("torch (layers)", "forward", "torch-layer", 2**20, 1.0, 4.0) in pairs
    assert ("torch", "backward", "torch", 64, 4.0, 4.0) in pairs
    table = gen_performance.comparison_table(pairs).splitlines()
    assert table[0] == "| backend | native | size | forward | backward |"
    assert "| torch | `torch` | 2^20 | 1 vs 8: 0.12x | 2 vs 8: 0.25x |" in table
    assert "| torch (layers) | `torch-layer` | 2^6 | 3 vs 3: 1.00x |  |" in table


def test_performance_fragment_says_when_and_where_and_plots(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(gen_performance, "GENERATED", tmp_path)
    result = tmp_path / "cpu-2031-01-02.json"
    data = {"results": _pair_rows(), "meta": {"cpu_model": "Some CPU", "cpu_count": 4}}
    result.write_text(json.dumps(data))
    text = gen_performance.fragment(result)
    assert text.startswith("Measured 2031-01-02 (Some CPU, 4 CPU cores)")
    assert "_generated/perf-cpu-2031-01-02.png" in text and (tmp_path / "perf-cpu-2031-01-02.png").stat().st_size
    data["meta"]["date"] = "2032-03-04T05:06:07+00:00"  # the file's own date wins over its name
    result.write_text(json.dumps(data))
    assert gen_performance.fragment(result).startswith("Measured 2032-03-04 ")


def test_performance_reports_a_result_file_no_page_shows(tmp_path: Path, monkeypatch) -> None:
    page = tmp_path / "performance.md"
    page.write_text("```{include} _generated/perf-shown.md\n```\n")
    monkeypatch.setattr(gen_performance, "INCLUDERS", (page,))
    problems = gen_performance.not_included([tmp_path / "shown.json", tmp_path / "forgotten.json"])
    assert len(problems) == 1 and "forgotten.json is not shown" in problems[0]


def test_every_result_file_is_on_a_page() -> None:
    assert gen_performance.not_included(sorted(gen_performance.RESULTS.glob("*.json"))) == []


# --- the built site ------------------------------------------------------------------------------


@needs_site
def test_built_site_has_every_page() -> None:
    for page in (
        "getting-started",
        "user-guide",
        "theory",
        "stream-spec",
        "golden-vectors",
        "backend-matrix",
        "performance",
        "migrating",
        "porting",
        "seeds",
        "api",
        "changelog",
    ):
        assert (SITE / f"{page}.html").is_file(), page


@needs_site
def test_built_api_reference_lists_every_public_name() -> None:
    from sphinx.util.inventory import InventoryFile

    with open(SITE / "objects.inv", "rb") as f:
        inv = InventoryFile.load(f, "", lambda base, uri: uri)
    data = getattr(inv, "data", inv)  # an Inventory object in newer Sphinx, a dict before
    objects = {name for kind, entries in data.items() if kind.startswith("py:") for name in entries}
    missing = sorted(q for q, _ in xdrop_docs.public_names() if q not in objects)
    assert missing == []


@needs_site
def test_built_golden_table_reproduces_every_case() -> None:
    cases = json.loads((ROOT / "tests" / "data" / "golden_v1.json").read_text())["cases"]
    html = (SITE / "golden-vectors.html").read_text()
    assert html.count("<td><p>yes</p></td>") == len(cases)
    assert "NO" not in html.split("reproduced", 1)[1].split("</table>", 1)[0]


@needs_site
def test_built_theory_page_shows_the_generated_figure() -> None:
    html = (SITE / "theory.html").read_text()
    assert "theory_expectation.png" in html
    assert (SITE / "_images" / "theory_expectation.png").stat().st_size > 10_000
