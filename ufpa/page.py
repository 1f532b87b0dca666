"""The study as one HTML page: the executed notebooks 01–06, inputs hidden, behind a narrative whose numbers come from
the records (``report.findings``), with a table of contents; and a check of the page in a real headless Chromium.

``make report`` = ``python -m ufpa report``: executes notebook 06 (figures and tables) and one training notebook 05 (a
finished run of the profile, with its sibling variants' predictions on the same crops) into ``reports/notebooks/``,
then writes ``reports/study.html`` and, where Chromium is installed, a screenshot of it.

The page works offline and is one file: images are embedded, formulas are converted to MathML when the page is built
(``tex_to_mathml``; browsers lay MathML out natively) and no script, style or image is loaded from anywhere
(``check_page`` reads the HTML, ``check_in_browser`` watches every request a real Chromium makes).
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import select
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import asdict, replace
from html.parser import HTMLParser
from pathlib import Path
from xml.etree import ElementTree

from . import records, report
from .models import ALIGNMENTS

NOTEBOOKS = ("01_derivation", "02_numerical_verification", "03_misalignment_in_models", "04_data_and_codecs",
             "05_train", "06_figures_and_tables")


def showcase_run(profile) -> object:
    """The run notebook 05 shows on the page: the profile's baseline at its smallest input size, first seed."""
    from . import sweep

    runs = sweep.expand(sweep.load_grid(profile))
    base = [c for c in runs if c.alignment == "baseline"] or runs
    return min(base, key=lambda c: (c.input_size[0] * c.input_size[1], c.seed, c.codec))


def execute_notebooks(profile, reports_root=None, progress: bool = False) -> list[Path]:
    """Execute notebook 05 (on a finished run: nothing is trained) and notebook 06 into ``<reports>/notebooks``."""
    import papermill as pm

    from . import sweep
    from .train import DONE, record_path, resolve_paths, run_dir

    root = Path(reports_root) if reports_root else records.reports_dir()
    out = root / "notebooks"
    out.mkdir(parents=True, exist_ok=True)
    cfg = replace(showcase_run(profile), reports=str(root))
    done = run_dir(resolve_paths(cfg)) / DONE  # where notebook 05 trained it
    shown = out / "05_train.ipynb"
    nb = records.REPO_ROOT / "notebooks"
    if not record_path(cfg).is_file():
        raise FileNotFoundError(f"the page shows run {sweep.run_id(cfg)}, whose record {record_path(cfg)} is "
                                "missing: run `make study` first")
    if done.is_file():
        params = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}
        params["compare_with"] = [v for v in ALIGNMENTS if v != cfg.alignment]
        params["synth"] = None  # a finished run: its data is there, made by the sweep
        sweep.check_parameters(params)
        pm.execute_notebook(str(nb / "05_train.ipynb"), str(shown), parameters=params,
                            cwd=str(records.REPO_ROOT), progress_bar=progress, kernel_name="python3")
    elif shown.is_file():  # a fresh clone: the record is committed, the checkpoint is not; nothing is re-trained
        print(f"notebook 05: run {sweep.run_id(cfg)} has its record but no checkpoint here; the page keeps its "
              f"committed execution ({records.repo_relative(shown)})")
    else:
        raise FileNotFoundError(f"the page shows run {sweep.run_id(cfg)}, which has neither a checkpoint here "
                                f"({done} is missing) nor an executed notebook 05 ({shown}): run `make study` first")
    pm.execute_notebook(str(nb / "06_figures_and_tables.ipynb"), str(out / "06_figures_and_tables.ipynb"),
                        parameters={"results": str(root / "results"), "reports": str(root),
                                    "flip_test": report.shown_flip_test(root / "results")}, cwd=str(nb),
                        progress_bar=progress, kernel_name="python3")
    return [out / "05_train.ipynb", out / "06_figures_and_tables.ipynb"]


def _title(nb) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            m = re.search(r"^#\s+(.+)$", cell.source, re.M)
            if m:
                return m.group(1).strip()
    return "notebook"


def narrative(results_dir) -> str:
    """The page's opening: question, method, the registered design, findings (numbers from the records), limits
    (Markdown)."""
    frame = report.load_runs(results_dir)
    arms = ", ".join(f"`{report._arm_label(a)}`" for a in report.arm_order(frame["arm"]))
    return f"""# Unbiased feature position alignment: the study

**Question.** Multi-scale pose networks such as HRNet fuse feature maps that went through strided convolutions and
interpolation; the two place samples on different grids, so fused features are shifted against each other (the *shift
error*). Wang, Zhou, Zhang and Mok (Neurocomputing 537, 2023) remove it by making convolution and interpolation agree.
Where does that alignment change accuracy?

**Method.** Notebooks 01–03 derive the shift error symbolically, verify it against real torch operations and audit it
in real networks; notebook 04 checks the data (SynthPose: procedural people with exact sub-pixel ground truth) and the
keypoint codecs; notebook 05 is one training run (here the baseline with its aligned siblings' predictions on the same
crops); notebook 06 turns every training record into the tables and figures. This page was built from
{frame['run_id'].nunique()} training records, arms {arms} (an arm: alignment, padding where a control sets it, the size
it runs at).

**Design** (each registration says what it had seen of its runs; a comparison is paired by seed):

{report.design_markdown(results_dir)}
**Findings** (read from the records):

{report.findings(frame, results_dir=results_dir)}
{_converged(results_dir)}
**Limits.** SynthPose is not COCO: absolute AP here is not comparable with published numbers (the published anchors in
notebook 06 are context only). The CPU study trains a 0.18 M-parameter HRNet for minutes per run on one easy dataset
at one low resolution; `make study`'s runs are as long as two cores allow for the design in about two hours, and a
run that had not plateaued makes no claim; the converged study trains until the baseline plateaus (144 epochs, about
10 h on 2 cores, over several sessions). The GPU profile (HRNet-W32, standard SynthPose, the same design) has not
been run unless its records appear in its own folder, `reports/gpu/`.
"""


def _converged(results_dir) -> str:
    out = []
    markers = report.converged_summary(results_dir, report.MARKERS)
    if markers:
        out.append("**The converged study where localisation limits accuracy** (`profiles/cpu_markers.yaml`, "
                   "`reports/markers/`: 'markers' data, where each joint wears its own colour, the official UFPA head, "
                   "144 epochs, the learned aligner as a fourth arm, AP without flip test; with it the confirmatory "
                   "design `profiles/cpu_markers_localisation.yaml`, its comparisons on end-point error on found "
                   "keypoints over the held-out seeds 3-6; it runs over several sessions, and this is what its records "
                   f"say so far):\n\n{markers}\n")
    converged = report.converged_summary(results_dir, report.CONVERGED)
    if converged:
        out.append("**The first converged design** (`profiles/cpu_converged.yaml`, `reports/converged/`: the design "
                   "above at 144 epochs; stopped after seed 0 when the head-width check showed that the tiny preset's "
                   f"8-channel head loses the wrists whatever the data):\n\n{converged}\n")
    return "\n".join(out)


# the converged markers study's figures the page shows after the narrative (drawn in reports/markers/figures/ by
# `python -m ufpa report --tables-only --profile profiles/cpu_markers.yaml`): file stem -> what it shows
MARKERS_FIGURES = {
    "06_design": "its registered comparisons that have an estimate (two paired seeds or more)",
    "06_own_family": "the designs judged as their own family that have an estimate: the confirmatory design's "
                     "comparisons (end-point error on found keypoints, held-out seeds 3-6) and, once registered, the "
                     "codec axis's",
    "06_decomposition": "what each step of `ufpa`'s change does (corner alignment, the exact grid's +1 pixel, "
                        "padding), on AP as registered and on end-point error on found keypoints (exploratory)",
    "06_learning_curves": "its learning curves and the learning rate",
    "06_per_joint": "per joint: end-point error on found keypoints, and how often a joint lies nearer its partner's "
                    "truth",
    "06_learned_offsets": "what the learned aligner learned at each fusion point, against the correction the geometry "
                          "asks for",
}


def study_figure_cells(results_dir, study: str = report.MARKERS) -> list:
    """Cells showing a converged study's figures (``MARKERS_FIGURES``, those drawn in ``reports/<study>/figures``
    beside ``results_dir``'s folder): a caption, then the figure as an output, so it is laid out as the notebooks'
    figures are. Empty when none is drawn."""
    import nbformat

    folder = Path(results_dir).parent / study / "figures"
    cells = []
    for stem, what in MARKERS_FIGURES.items():
        path = folder / f"{stem}.png"
        if not path.is_file():
            continue
        caption = f"*The {study} study: {what}* (`reports/{study}/figures/{stem}.png`)"
        cells.append(nbformat.v4.new_markdown_cell(caption))
        image = base64.b64encode(path.read_bytes()).decode("ascii")
        cells.append(nbformat.v4.new_code_cell(outputs=[nbformat.v4.new_output("display_data", {"image/png": image})]))
    return cells


def build_page(notebook_paths, out_html, results_dir) -> Path:
    """One HTML page: the narrative and the converged study's figures, a table of contents, then each executed
    notebook with its inputs hidden."""
    import nbformat

    page = nbformat.v4.new_notebook()
    cells = [nbformat.v4.new_markdown_cell(narrative(results_dir)), *study_figure_cells(results_dir)]
    toc = ["## Contents", ""]
    body = []
    for i, path in enumerate(notebook_paths):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: `make study` executes 01–04, `make report` 05 and 06")
        nb = nbformat.read(path, as_version=4)
        anchor = f"part-{i + 1}"
        toc.append(f"{i + 1}. [{html.escape(_title(nb))}](#{anchor})")
        body.append(nbformat.v4.new_markdown_cell(f'<a id="{anchor}"></a>\n\n---'))
        for cell in nb.cells:
            if "parameters" in cell.get("metadata", {}).get("tags", []) or "injected-parameters" in cell.get(
                    "metadata", {}).get("tags", []):
                continue  # parameters are inputs; the page shows results
            body.append(cell)
    cells.append(nbformat.v4.new_markdown_cell("\n".join(toc)))
    page.cells = cells + body
    page.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                     "language_info": {"name": "python"}, "title": "ufpa: the study"}
    text, _ = _exporter().from_notebook_node(page)
    return records.atomic_write_text(out_html, text)


# --- formulas as MathML ----------------------------------------------------------------------------------------------

# environments latex2mathml lays out wrongly or not at all, as ones it handles (aligned rows -> align*, centred rows ->
# a one-column array, numbered equations -> their body); \label, \tag, \nonumber and \notag have nothing to show
_TEX_REWRITES = (
    (re.compile(r"\\(begin|end)\{(?:aligned|align|eqnarray\*?|flalign\*?)\}"), r"\\\1{align*}"),
    (re.compile(r"\\begin\{(?:gathered|gather\*?|multline\*?)\}"), r"\\begin{array}{c}"),
    (re.compile(r"\\end\{(?:gathered|gather\*?|multline\*?)\}"), r"\\end{array}"),
    (re.compile(r"\\(?:begin|end)\{(?:equation\*?|displaymath)\}"), ""),
    (re.compile(r"\\(?:label|tag)\{[^{}]*\}|\\nonumber\b|\\notag\b"), ""),
)
_LIMITS = {"∑", "∏", "∐", "⋂", "⋃", "⨀", "⨁", "⨂", "⋀", "⋁", "lim", "max", "min", "sup", "inf"}  # big operators
_UNDER_OVER = {"msubsup": "munderover", "msub": "munder", "msup": "mover"}
# math in a text/latex output (sympy writes "$\displaystyle ...$"): $$...$$, \[...\], \begin{env}...\end{env},
# $...$, \(...\)
_TEX_MATH = re.compile(r"\$\$(?P<dd>.+?)\$\$|\\\[(?P<db>.+?)\\\]"
                       r"|(?P<env>\\begin\{(?P<name>[A-Za-z]+\*?)\}.*?\\end\{(?P=name)\})"
                       r"|(?<![\\$])\$(?P<i>[^$]+?)(?<!\\)\$|\\\((?P<ib>.+?)\\\)", re.S)


def tex_to_mathml(tex: str, display: bool = False) -> str:
    """One TeX formula as a MathML element (inline, or a display block). TeX that latex2mathml cannot parse is kept as
    TeX text, which ``check_page`` then reports; a command it does not know ends up as text inside the MathML, which
    ``check_page`` reports too."""
    from latex2mathml.converter import convert

    body = tex
    for pattern, repl in _TEX_REWRITES:
        body = pattern.sub(repl, body)
    try:
        mathml = convert(body.strip(), display="block" if display else "inline")
    except Exception:  # latex2mathml has a dozen error types for TeX it cannot parse (x^, \left( without \right, ...)
        return html.escape(f"$${tex}$$" if display else f"${tex}$", quote=False)
    root = ElementTree.fromstring(mathml.replace(' xmlns="http://www.w3.org/1998/Math/MathML"', "", 1))
    for el in root.iter():  # \sum_a^b and the like: limits under and over in display style, as TeX sets them
        if el.tag in _UNDER_OVER and len(el) and el[0].tag == "mo" and (el[0].text or "").strip() in _LIMITS:
            el.tag = _UNDER_OVER[el.tag]
            el[0].set("movablelimits", "true")
    return ElementTree.tostring(root, encoding="unicode")  # HTML knows <math> by name: no namespace needed


def latex_output_html(text: str) -> str:
    """A ``text/latex`` output as HTML: every math span in it as MathML, the text around escaped."""
    out, pos = [], 0
    for m in _TEX_MATH.finditer(text):
        out.append(html.escape(text[pos:m.start()], quote=False))
        inline, block = m.group("i") or m.group("ib"), m.group("dd") or m.group("db") or m.group("env")
        out.append(tex_to_mathml(inline) if inline else tex_to_mathml(block, display=True))
        pos = m.end()
    return "".join(out) + html.escape(text[pos:], quote=False)


# the lab template without its CDN scripts (require.js, MathJax, mermaid, widgets); text/latex outputs as MathML
_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{% block jupyter_widgets %}{% endblock jupyter_widgets %}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block html_head_css -%}
<style type="text/css">
/* formulas are MathML, laid out by the browser: in a math font where the reader has one */
math { font-family: "STIX Two Math", "Cambria Math", "Latin Modern Math", "DejaVu Math TeX Gyre", math; }
math[display="block"] { margin: 0.5em 0; }
/* figures as wide as the text column, so their 9-pt labels stay readable */
.jp-RenderedImage img { width: 100%; max-width: 100%; height: auto; }
</style>
{%- endblock html_head_css -%}
{% block data_latex scoped %}
<div class="jp-RenderedLatex jp-OutputArea-output {{ extra_class }}" data-mime-type="text/latex">
{{ output.data['text/latex'] | latex_output_html }}
</div>
{%- endblock data_latex %}
"""


def _exporter():
    """nbconvert's lab HTML exporter, inputs hidden, that writes formulas as MathML and loads no script."""
    from jinja2 import DictLoader, pass_context
    from nbconvert import HTMLExporter
    from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath

    class MathMLRenderer(IPythonRenderer):
        def inline_math(self, body: str) -> str:
            return tex_to_mathml(body)

        def block_math(self, body: str) -> str:
            return tex_to_mathml(body, display=True)

        def latex_environment(self, name: str, body: str) -> str:
            return tex_to_mathml(f"\\begin{{{name}}}{body}\\end{{{name}}}", display=True)

    class PageExporter(HTMLExporter):
        @pass_context
        def markdown2html(self, context, source):  # HTMLExporter.markdown2html with the MathML renderer
            cell = context.get("cell", {})
            renderer = MathMLRenderer(escape=False, attachments=cell.get("attachments", {}),
                                      embed_images=self.embed_images,
                                      path=context.get("resources", {}).get("metadata", {}).get("path", ""),
                                      anchor_link_text=self.anchor_link_text,
                                      exclude_anchor_links=self.exclude_anchor_links, **self.lexer_options)
            return MarkdownWithMath(renderer=renderer).render(source)

        def default_filters(self):
            yield from super().default_filters()
            yield ("latex_output_html", latex_output_html)

    return PageExporter(template_name="lab", template_file="ufpa_page.html.j2",
                        extra_loaders=[DictLoader({"ufpa_page.html.j2": _TEMPLATE})], exclude_input=True,
                        exclude_input_prompt=True, exclude_output_prompt=True)


# --- the page works offline: what the HTML loads, and TeX left unrendered --------------------------------------------

# elements whose text is not prose: a formula's TeX there is code or already rendered
_NOT_PROSE = {"math", "svg", "code", "pre", "script", "style", "textarea", "kbd", "samp", "tt"}
# inline elements: text on either side of one runs on (a formula broken by <em> is still one formula)
_INLINE = {"a", "b", "i", "em", "strong", "span", "sub", "sup", "small", "abbr", "mark", "u", "s"}
# attributes whose URL the browser loads while it shows the page (links to follow, <a href>, are not loaded)
_LOADS = {"script": ("src",), "link": ("href",), "img": ("src", "srcset"), "source": ("src", "srcset"),
          "video": ("src", "poster"), "audio": ("src",), "track": ("src",), "iframe": ("src",), "embed": ("src",),
          "object": ("data",), "input": ("src",), "image": ("href", "xlink:href"), "use": ("href", "xlink:href"),
          "feimage": ("href", "xlink:href")}
_CSS_URL = re.compile(r"""url\(\s*['"]?([^'")\s]+)|@import\s+['"]([^'"]+)""")
_JS_URL = re.compile(r"""(?:\bimport\s*\(?\s*|\bfrom\s*|\.src\s*=\s*)['"`]((?:https?:)?//[^'"`]+)""")
# TeX in prose: $$...$$, $...$ (no space inside the dollars, so "$5 and $10" is not math), \[ \( \begin{, \command
_RAW_TEX = re.compile(r"\$\$.+?\$\$|(?<![\w$\\])\$(?=[^\s$])[^$\n]*?(?<=[^\s\\])\$(?![\w$])"
                      r"|\\[\[(]|\\[A-Za-z]+", re.S)


def _embedded(url: str) -> bool:
    """True for a URL that needs nothing outside the page: data:, a fragment, about:, blob:, javascript:."""
    return url.strip().lower().startswith(("data:", "#", "about:", "blob:", "javascript:")) or not url.strip()


class _PageScan(HTMLParser):
    """One pass over a page: the URLs it loads, its prose (text outside <math>, <svg>, code and scripts), the text
    inside its formulas, and how many formulas it has."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.loads, self.prose, self.in_math, self.formulas = [], [], [], 0
        self._skip, self._math, self._tag = 0, 0, ""

    def handle_starttag(self, tag, attrs):
        self._tag = tag
        attrs = dict(attrs)
        for name in _LOADS.get(tag, ()):
            value = attrs.get(name) or ""
            # srcset: "a.png 1x, data:image/png;base64,... 2x": URLs between descriptors (data: URLs hold commas)
            urls = [u.rstrip(",") for u in re.split(r"\s+|(?<=\d[wx]),", value)
                    if u and not re.fullmatch(r"[\d.]+[wx],?", u)] if name == "srcset" else [value]
            self.loads += [f"<{tag} {name}={url!r}>" for url in urls if not _embedded(url)]
        self.loads += [f"style url({u!r})" for u in _css_urls(attrs.get("style") or "")]
        if tag in _NOT_PROSE:
            self._skip += 1
        if tag == "math":
            self._math += 1
            self.formulas += 1
        if tag not in _INLINE:
            self.prose.append("\n")

    def handle_endtag(self, tag):
        if tag in _NOT_PROSE and self._skip:
            self._skip -= 1
        if tag == "math" and self._math:
            self._math -= 1
        if tag not in _INLINE:
            self.prose.append("\n")
        self._tag = ""

    def handle_data(self, data):
        if self._tag == "style":
            self.loads += [f"style url({u!r})" for u in _css_urls(data)]
        elif self._tag == "script":
            self.loads += [f"script import {u!r}" for u in _JS_URL.findall(data)]
        if self._math:
            self.in_math.append(data)
        elif not self._skip:
            self.prose.append(data)


def _css_urls(css: str) -> list[str]:
    return [u for pair in _CSS_URL.findall(css) for u in pair if u and not _embedded(u)]


def page_problems(text: str) -> tuple[list[str], int]:
    """What keeps an HTML page from working offline as one file: every script, style sheet, image, frame or font it
    would load from a network address or from a file beside it; TeX left as text outside a formula; TeX that a formula
    kept as text (a command the converter did not know). Returns the problems and the number of formulas (<math>
    elements)."""
    scan = _PageScan()
    scan.feed(text)
    scan.close()
    problems = []
    if scan.loads:
        problems.append(f"it loads {len(scan.loads)} resource(s) from outside the page: "
                        + ", ".join(list(dict.fromkeys(scan.loads))[:5]))
    raw = [m.group(0) for m in _RAW_TEX.finditer("".join(scan.prose))]
    if raw:
        shown = ", ".join(repr(r if len(r) <= 60 else r[:57] + "...") for r in list(dict.fromkeys(raw))[:5])
        problems.append(f"{len(raw)} formula(s) left as raw TeX outside <math>: {shown}")
    kept = [t.strip() for t in scan.in_math if re.search(r"\\[A-Za-z]+", t)]
    if kept:
        problems.append(f"{len(kept)} piece(s) of TeX inside <math> the converter did not understand: "
                        + ", ".join(repr(k) for k in list(dict.fromkeys(kept))[:5]))
    return problems, scan.formulas


def check_page(page) -> dict:
    """The page as written (no browser needed): it loads nothing from outside itself and no formula is left as TeX.
    Raises AssertionError naming every problem; returns what was checked."""
    page = Path(page)
    problems, formulas = page_problems(page.read_text(encoding="utf-8"))
    if problems:
        raise AssertionError(f"{page} does not work offline: " + "; ".join(problems))
    return {"page": str(page), "bytes": page.stat().st_size, "formulas": formulas}


# --- the page in a real browser --------------------------------------------------------------------------------------

def chromium() -> str | None:
    """A headless Chromium: $CHROMIUM, else the first of chromium, chromium-browser, google-chrome on PATH."""
    if os.environ.get("CHROMIUM"):
        return os.environ["CHROMIUM"]
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


def _above_4(fd: int) -> int:
    """The same pipe end as a close-on-exec fd numbered 10 or more (so putting the browser's ends on 3 and 4 cannot
    overwrite one)."""
    import fcntl

    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class _DevTools:
    """Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``: the browser reads
    commands on its fd 3 and writes replies and events on its fd 4, each a JSON text ended by a NUL byte), so no
    websocket library and no port are needed. Events are kept in ``events`` in the order they came."""

    def __init__(self, exe: str, flags: list[str], timeout: float):
        self.deadline = time.monotonic() + timeout
        self.events: list[dict] = []
        self._id, self._buf = 0, bytearray()
        cmd_r, self._cmd = (_above_4(fd) for fd in os.pipe())
        self._out, out_w = (_above_4(fd) for fd in os.pipe())

        def browser_ends():  # in the child, before exec: its fd 3 and 4 (inherited; every other fd closes on exec)
            os.dup2(cmd_r, 3)
            os.dup2(out_w, 4)

        self._log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([exe, *flags, "--remote-debugging-pipe"], preexec_fn=browser_ends, close_fds=False,
                                     stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        os.close(cmd_r)
        os.close(out_w)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            if self.proc.poll() is None:
                os.write(self._cmd, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
                self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            pass
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the process group this object started
            self.proc.wait()
        os.close(self._cmd)
        os.close(self._out)
        self._log.close()

    def _log_tail(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-2000:]

    def _message(self, quiet: float | None = None) -> dict | None:
        """The next message; None when ``quiet`` seconds pass without one. TimeoutError past the deadline."""
        while (end := self._buf.find(b"\0")) < 0:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"Chromium did not answer in time; its log ends: {self._log_tail()}")
            if not select.select([self._out], [], [], min(left, quiet if quiet is not None else left))[0]:
                if quiet is not None:
                    return None
                continue
            chunk = os.read(self._out, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium closed the DevTools pipe (exit code {self.proc.poll()}); its log ends: "
                                   f"{self._log_tail()}")
            self._buf += chunk
        message = json.loads(bytes(self._buf[:end]))
        del self._buf[:end + 1]
        return message

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Run one DevTools command and return its result (events that arrive meanwhile are kept)."""
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}, **({"sessionId": session} if session else {})}
        os.write(self._cmd, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._message()
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"Chromium refused {method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_for(self, event: str):
        while not any(e["method"] == event for e in self.events):
            msg = self._message()
            if "method" in msg:
                self.events.append(msg)

    def settle(self, quiet: float = 0.5):
        """Keep reading events until every request has ended and ``quiet`` seconds pass without a message."""
        while True:
            started = {e["params"]["requestId"] for e in self.events if e["method"] == "Network.requestWillBeSent"}
            ended = {e["params"]["requestId"] for e in self.events
                     if e["method"] in ("Network.loadingFinished", "Network.loadingFailed")}
            msg = self._message(quiet)
            if msg is None and started <= ended:
                return
            if msg is not None and "method" in msg:
                self.events.append(msg)


def _browser_problems(events: list[dict], page_url: str) -> tuple[list[str], int]:
    """What the page asked the browser for beyond itself, what failed to load, and script errors."""
    urls, problems = {}, []
    for e in events:
        p = e.get("params", {})
        if e["method"] == "Network.requestWillBeSent":
            url = p["request"]["url"]
            urls[p["requestId"]] = url
            if not (_embedded(url) or url.split("#")[0] == page_url):
                problems.append(f"it requests {url[:120]} (the page must need nothing outside itself)")
        elif e["method"] == "Network.loadingFailed":
            why = p.get("blockedReason") or p.get("errorText") or "failed"
            problems.append(f"{urls.get(p['requestId'], 'a resource')[:120]} failed to load ({why})")
        elif e["method"] == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            why = d.get("exception", {}).get("description") or d.get("text", "")
            problems.append(f"a script failed: {why[:200]}")
        elif e["method"] == "Log.entryAdded" and p["entry"]["level"] == "error" and p["entry"]["source"] != "network":
            problems.append(f"the console shows an error: {p['entry']['text'][:200]}")
        elif e["method"] == "Runtime.consoleAPICalled" and p.get("type") == "error":
            problems.append("a script logged an error: "
                            + " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"])[:200])
    return list(dict.fromkeys(problems)), len(urls)


def check_in_browser(page, screenshot=None, width: int = 1280, height: int = 2400, timeout: float = 120) -> dict:
    """Open the page in headless Chromium, offline (every host name fails to resolve and every connection goes to a
    closed local port, so nothing leaves the machine), watching every request over the DevTools protocol. Fails
    (AssertionError naming each problem) when the page as written does not pass ``check_page``; when it requests
    anything but itself and data: URLs, or anything fails to load, or a script fails; when its rendered DOM lacks the
    narrative, the contents or one of the six parts, shows a traceback, holds TeX outside a formula, or has formulas
    the browser does not lay out as MathML; or when the screenshot (top ``width`` x ``height`` px) is blank. Returns
    what was checked."""
    import numpy as np
    from PIL import Image

    exe = chromium()
    if exe is None:
        raise FileNotFoundError("no Chromium found: install it (Debian: apt-get install chromium) or set CHROMIUM")
    page = Path(page).resolve()
    problems, _ = page_problems(page.read_text(encoding="utf-8"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--hide-scrollbars", f"--window-size={width},{height}", "--host-resolver-rules=MAP * ~NOTFOUND",
             "--proxy-server=http://127.0.0.1:9", "about:blank"]
    with tempfile.TemporaryDirectory() as profile, _DevTools(exe, [*flags, f"--user-data-dir={profile}"],
                                                             timeout) as browser:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        tab = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Network", "Runtime", "Log"):
            browser.send(f"{domain}.enable", session=tab)
        browser.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                            "mobile": False}, tab)
        browser.send("Page.navigate", {"url": page.as_uri()}, tab)
        browser.wait_for("Page.loadEventFired")
        browser.settle()
        dom = browser.send("Runtime.evaluate", {"expression": "document.documentElement.outerHTML",
                                                "returnByValue": True}, tab)["result"]["value"]
        not_laid_out = browser.send("Runtime.evaluate", {
            "expression": "[...document.querySelectorAll('math')].filter(m => "
                          "!getComputedStyle(m).display.includes('math')).length", "returnByValue": True},
                                    tab)["result"]["value"]
        png = base64.b64decode(browser.send("Page.captureScreenshot", {"format": "png"}, tab)["data"])
        loaded, requests = _browser_problems(browser.events, page.as_uri())
    if screenshot:
        Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
        Path(screenshot).write_bytes(png)
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float)
    problems += loaded
    for needle in ("Unbiased feature position alignment: the study", "Contents", "Findings"):
        if needle not in dom:
            problems.append(f"the rendered page lacks {needle!r}")
    parts = len(re.findall(r'id="part-\d+"', dom))
    if parts != len(NOTEBOOKS):
        problems.append(f"the rendered page has {parts} parts, expected {len(NOTEBOOKS)}")
    if "Traceback (most recent call last)" in dom:
        problems.append("the rendered page shows a traceback")
    rendered, formulas = page_problems(dom)
    problems += [f"rendered: {p}" for p in rendered if not p.startswith("it loads")]
    if not_laid_out:
        problems.append(f"{not_laid_out} of {formulas} formulas are not laid out as MathML by {exe} (Chromium >= 109 "
                        "lays MathML out)")
    if pixels.std() < 5:
        problems.append(f"the screenshot is blank (pixel std {pixels.std():.1f})")
    if problems:
        raise AssertionError(f"{page}: " + "; ".join(dict.fromkeys(problems)))
    return {"chromium": exe, "dom_chars": len(dom), "parts": parts, "formulas": formulas, "requests": requests,
            "screenshot_std": float(pixels.std()), "screenshot": str(screenshot) if screenshot else None}


def make_report(profile, reports_root=None, screenshot: bool = True, progress: bool = False) -> dict:
    """Everything ``make report`` does; returns the paths written and the checks of the page."""
    root = Path(reports_root) if reports_root else records.reports_dir()
    execute_notebooks(profile, root, progress)
    # 01-04 do not depend on the profile: a profile's own folder may lack them (make study runs them into reports/)
    study = records.REPO_ROOT / "reports" / "notebooks"
    paths = [root / "notebooks" / f"{name}.ipynb" if (root / "notebooks" / f"{name}.ipynb").is_file()
             or name in NOTEBOOKS[4:] else study / f"{name}.ipynb" for name in NOTEBOOKS]
    page = build_page(paths, root / "study.html", root / "results")
    readme = records.REPO_ROOT / "README.md"
    study = report.is_study_folder(root / "results")
    out = {"page": str(page), "readme_updated": report.update_readme(readme, root / "results", root / "tables")
           if study else f"no: {records.repo_relative(root)} is not the study's reports/ (the README shows that one)",
           "offline": check_page(page)}
    if screenshot:
        if chromium() is None:
            out["browser"] = "skipped: no Chromium installed (apt-get install chromium, or set CHROMIUM)"
        else:
            out["browser"] = check_in_browser(page, root / "figures" / "study_page.png")
    return out
