"""The study page works offline: formulas become MathML when the page is built, and the checks refuse a page that
would load anything from outside itself or shows a formula as raw TeX. The HTML checks run everywhere (CI has no
browser); the browser checks where Chromium is installed. Pages built from notebooks: tests/test_report.py."""

import re
from pathlib import Path

import nbformat
import pytest

from ufpa import page

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "reports" / "notebooks").glob("*.ipynb")) + sorted((ROOT / "notebooks").glob("*.ipynb"))
needs_chromium = pytest.mark.skipif(page.chromium() is None, reason="no Chromium here: runs where one is installed")


def notebook_formulas(path):
    """Every formula of a notebook as the page meets it: math in its Markdown, and its text/latex outputs."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            yield from (f"${m}$" for m in re.findall(r"(?<![\\$])\$([^$]+?)\$", cell.source))
        for out in cell.get("outputs", []):
            if "text/latex" in out.get("data", {}):
                yield out["data"]["text/latex"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_formula_of_the_notebooks_becomes_mathml(path):
    for tex in notebook_formulas(path):
        rendered = page.latex_output_html(tex)
        assert rendered.startswith("<math") and rendered.endswith("</math>"), tex
        assert page.page_problems(f"<p>{rendered}</p>") == ([], 1), tex


def test_the_tex_the_derivation_uses():
    floor = page.tex_to_mathml(r"\displaystyle x(o) = \left\lfloor{\frac{n_{in} \left(o + \frac{1}{2}\right)}"
                               r"{n_{out}}}\right\rfloor")
    assert "<mstyle displaystyle=\"true\"" in floor and floor.count("<mfrac>") == 2 and "⌊" in floor
    mean = page.tex_to_mathml(r"\frac{1}{k}\sum_{j=0}^{k-1}\mathrm{tap}_j(o)")
    assert '<munderover><mo movablelimits="true">∑</mo>' in mean  # limits under and over in display style
    assert '<mi mathvariant="normal">t</mi>' in mean  # \mathrm upright
    for env in ("aligned", "align", "align*", "eqnarray"):
        rows = page.tex_to_mathml(rf"\begin{{{env}}} a &= b \\ c &= d \end{{{env}}}", display=True)
        assert rows.startswith('<math display="block">') and rows.count("<mtr>") == 2 and "&" not in rows, env
    assert page.tex_to_mathml(r"\begin{equation} a = b \label{eq} \end{equation}", display=True).count("<mi>") == 2
    assert page.latex_output_html(r"$x$ < $$y$$") == ('<math display="inline"><mrow><mi>x</mi></mrow></math> &lt; '
                                                     '<math display="block"><mrow><mi>y</mi></mrow></math>')


def test_tex_the_converter_cannot_read_is_reported():
    unparsable = page.tex_to_mathml("x^")
    assert unparsable == "$x^$"
    assert "raw TeX outside <math>: '$x^$'" in page.page_problems(f"<p>{unparsable}</p>")[0][0]
    unknown = page.tex_to_mathml(r"\foo{x} + 1")
    assert r"inside <math> the converter did not understand: '\\foo'" in page.page_problems(unknown)[0][0]


@pytest.mark.parametrize("html", [
    r"<p>offset $x_{\mathrm{conv}}(o)$ here</p>",
    r"<p>$$a = b$$</p>",
    r"<div>where \frac{a}{b} is</div>",
    r"<p>\begin{aligned} a &amp;= b \end{aligned}</p>",
    r"<p>$x_{<em>a</em>}$</p>",  # a formula markdown broke with emphasis is still one formula
    r"<p>$i$ and \(o\)</p>",
])
def test_raw_tex_outside_a_formula_is_refused(html):
    problems, _ = page.page_problems(html)
    assert len(problems) == 1 and "raw TeX outside <math>" in problems[0]


@pytest.mark.parametrize("html", [
    "<p>costs $5 and $10</p>",  # dollars, not math
    r"<p>code <code>$x$ \frac{a}{b}</code></p><pre>\alpha $y$</pre><kbd>\n</kbd>",
    r"<script>const tex = '$x$ \\frac';</script><style>p::after { content: '\\2014'; }</style>",
    r"<svg><text>$x$ \mathrm{a}</text></svg>",
    '<math display="inline"><mrow><mi>x</mi><mo>=</mo><mn>1</mn></mrow></math>',
])
def test_tex_where_it_belongs_is_not_refused(html):
    assert page.page_problems(html)[0] == []


@pytest.mark.parametrize("html", [
    '<script src="https://cdnjs.cloudflare.com/ajax/libs/mathjax/2.7.7/latest.js"></script>',
    '<script src="//cdn.invalid/x.js"></script>',
    '<link rel="stylesheet" href="https://fonts.invalid/a.css">',
    '<img src="figures/06_paired_gain.png">',  # a file beside the page: the page is no longer one file
    '<img srcset="data:image/png;base64,AAAA 1x, big.png 2x">',
    '<style>@import "https://fonts.invalid/b.css";</style>',
    '<style>.a { background: url("https://x.invalid/a.png") }</style>',
    '<div style="background: url(a.png)">x</div>',
    '<iframe src="https://x.invalid/"></iframe>',
    '<svg><image href="https://x.invalid/a.png"/></svg>',
    '<script type="module">const m = (await import("https://cdn.invalid/mermaid.mjs")).default;</script>',
])
def test_anything_loaded_from_outside_the_page_is_refused(html):
    problems, _ = page.page_problems(html)
    assert len(problems) == 1 and "from outside the page" in problems[0]


def test_embedded_resources_and_links_are_fine():
    html = ('<img src="data:image/png;base64,iVBORw0KGgo="><style>.a { background: url(data:image/svg+xml;base64,'
            'PHN2Zz4=) }</style><a href="https://doi.org/10.1016/j.neucom.2023.03.039">paper</a><a href="#part-1">1</a>'
            '<script>document.title = "x";</script>')
    assert page.page_problems(html) == ([], 0)


def test_check_page_names_the_problems(tmp_path):
    good = tmp_path / "good.html"
    good.write_text('<html><body><p>sits at <math><mi>o</mi></math></p></body></html>')
    assert page.check_page(good)["formulas"] == 1
    bad = tmp_path / "bad.html"
    bad.write_text('<html><head><script src="https://cdn.invalid/require.js"></script></head>'
                   r'<body><p>sits at $o$</p></body></html>')
    with pytest.raises(AssertionError, match=r"does not work offline: it loads 1 resource.*cdn.invalid.*raw TeX"):
        page.check_page(bad)


PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>t</title>{head}</head><body><main>
<h1>Unbiased feature position alignment: the study</h1><h2>Contents</h2><p><b>Findings</b></p>
{parts}<p>x sits at <math><msub><mi>x</mi><mi>o</mi></msub></math></p>
<div style="height: 400px; background: linear-gradient(#fff, #036)"></div>{body}</main></body></html>"""


def handmade(tmp_path, head="", body=""):
    path = tmp_path / "page.html"
    parts = "".join(f'<a id="part-{i}"></a><p>part {i}</p>' for i in range(1, 7))
    path.write_text(PAGE.format(head=head, body=body, parts=parts))
    return path


@needs_chromium
def test_browser_check_passes_a_page_that_needs_nothing_else(tmp_path):
    checked = page.check_in_browser(handmade(tmp_path), tmp_path / "shot.png", width=400, height=600)
    assert checked["parts"] == 6 and checked["formulas"] == 1 and checked["requests"] == 1
    assert (tmp_path / "shot.png").stat().st_size > 0


@needs_chromium
def test_browser_check_refuses_an_external_script(tmp_path):
    path = handmade(tmp_path, head='<script src="https://cdn.invalid/lib.js"></script>')
    with pytest.raises(AssertionError) as err:
        page.check_in_browser(path, width=400, height=600)
    assert "it loads 1 resource(s) from outside the page" in str(err.value)  # the HTML
    assert "it requests https://cdn.invalid/lib.js" in str(err.value)  # the browser: asked for it (offline) ...
    assert "https://cdn.invalid/lib.js failed to load" in str(err.value)  # ... and did not get it


@needs_chromium
def test_browser_check_sees_what_scripts_do(tmp_path):
    """Only a browser sees these: a script that fetches a file beside the page, writes TeX into the page, or fails."""
    script = ("<script>const img = new Image(); img.src = 'figure' + '.png'; document.body.append(img);"
              "const p = document.createElement('p'); p.textContent = 'gain $\\\\frac{1}{2}$'; document.body.append(p);"
              "undefined_function();</script>")
    path = handmade(tmp_path, body=script)
    assert page.page_problems(path.read_text()) == ([], 1)  # the HTML alone looks fine
    with pytest.raises(AssertionError) as err:
        page.check_in_browser(path, width=400, height=600)
    message = str(err.value)
    assert f"it requests {(tmp_path / 'figure.png').as_uri()}" in message and "failed to load" in message
    assert r"rendered: 1 formula(s) left as raw TeX outside <math>: '$\\frac{1}{2}$'" in message
    assert "a script failed: ReferenceError: undefined_function is not defined" in message


def test_the_committed_page_works_offline():
    """reports/study.html as committed: nothing loaded from outside it, no formula left as TeX."""
    problems, formulas = page.page_problems((ROOT / "reports" / "study.html").read_text())
    assert problems == [] and formulas > 50


def test_the_page_shows_the_converged_studys_figures(tmp_path):
    """After the narrative: each drawn figure of reports/markers/figures with its caption (the learned offsets against
    the geometry among them); nothing where a folder has none."""
    import base64

    cells = page.study_figure_cells(ROOT / "reports" / "results")
    figures = ROOT / "reports" / "markers" / "figures"
    drawn = [stem for stem in page.MARKERS_FIGURES if (figures / f"{stem}.png").is_file()]
    assert "06_learned_offsets" in drawn and len(cells) == 2 * len(drawn)
    for caption, figure, stem in zip(cells[::2], cells[1::2], drawn):
        assert f"reports/markers/figures/{stem}.png" in caption.source
        png = base64.b64decode(figure.outputs[0]["data"]["image/png"])
        assert png == (figures / f"{stem}.png").read_bytes()
    assert page.study_figure_cells(tmp_path / "results") == []
    committed = (ROOT / "reports" / "study.html").read_text()
    assert all(f"reports/markers/figures/{stem}.png" in committed for stem in drawn), "make report rebuilds the page"
