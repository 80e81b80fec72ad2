"""``report.html``: the audit as one self-contained page a privacy reviewer can open and sign off.

Order follows the reviewer's questions: the verdict and the gate table first (is it releasable?),
then how bad in privacy terms (epsilon lower bound), whether it got worse (baseline), the ROC and
score histograms (how the attacks separate members), the validity checks (can the numbers be
trusted?), which training images are exposed (what to remove), and where it ran. Figures and
thumbnails are inlined as base64 PNG; the page loads nothing and runs no script.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from naa_guard.reports.rows import EXPOSED_HEADER, REGRESSION_HEADER, REGRESSION_RULE, VERDICTS, epsilon_line, model_lines, regression_rows, table_header, table_rows, verdict_sentence, verdict_word, worst_case_rows
from naa_guard.verdict.epsilon import DISCLAIMER

if TYPE_CHECKING:
    from naa_guard.result import AuditResult
    from naa_guard.verdict.exposed import ExposedMembers

THUMBNAIL_PIXELS = 96

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1100px;padding:1.5rem;color:#1b1f24;line-height:1.45}
h1{margin:.2rem 0}h2{margin-top:2rem;border-bottom:1px solid #d0d7de;padding-bottom:.3rem}
table{border-collapse:collapse;margin:.5rem 0}th,td{border:1px solid #d0d7de;padding:.3rem .6rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
.verdict{display:inline-block;padding:.3rem .9rem;border-radius:.4rem;font-weight:700;color:#fff}
.PASS{background:#1a7f37}.FAIL,.REGRESSED,.NOT-CERTIFIED{background:#cf222e}.ERROR{background:#9a6700}
td.PASS,td.FAIL,td.ERROR,td.REGRESSED{color:#fff;font-weight:600}
.note{color:#57606a;font-size:.92rem}.message{white-space:pre-wrap;font-size:.85rem;color:#57606a}
figure{margin:0}img.plot{max-width:100%;height:auto;border:1px solid #d0d7de}
.figures{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:.8rem;align-items:start}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(130px,1fr));gap:.8rem}
.gallery figure{border:1px solid #d0d7de;border-radius:.3rem;padding:.4rem;text-align:center}
.gallery img{width:96px;height:96px;image-rendering:pixelated;background:#000}
.gallery figcaption{font-size:.75rem;word-break:break-all}
"""


def thumbnail(image: np.ndarray) -> str:
    """Return a model-ready image (C, H, W in [-1, 1]) as a base64 PNG, enlarged for viewing."""
    from PIL import Image

    pixels = np.clip(np.rint((image + 1.0) * 127.5), 0, 255).astype(np.uint8)
    picture = Image.fromarray(pixels[0]) if pixels.shape[0] == 1 else Image.fromarray(np.moveaxis(pixels[:3], 0, -1))
    scale = max(1, THUMBNAIL_PIXELS // max(picture.size))
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST) if scale > 1 else picture
    picture.thumbnail((THUMBNAIL_PIXELS, THUMBNAIL_PIXELS))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _table(header: list[str], rows: list[list[str]], *, verdict_column: int | None = None, table_id: str = "", numeric: bool = True) -> str:
    head = "".join(f"<th>{escape(cell)}</th>" for cell in header)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            css = escape(cell.split(" (")[0].replace(" ", "-")) if i == verdict_column else ("num" if numeric and (cell[:1].isdigit() or cell[:1] in "+-") else "")
            cells.append(f'<td class="{css}">{escape(cell)}</td>' if css else f"<td>{escape(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    ident = f' id="{table_id}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _verdict(result: AuditResult) -> str:
    return verdict_word(result)


def _gates(result: AuditResult) -> list[str]:
    parts = ["<h2>Gates</h2>", _table(table_header(result), table_rows(result), verdict_column=5, table_id="gates")]
    failing = [gate for gate in result.gates if gate.status != "pass"]
    parts += [f'<p class="message"><b>{escape(VERDICTS[g.status])}</b> {escape(g.message)}</p>' for g in failing]
    return parts


def _privacy(result: AuditResult) -> list[str]:
    lines = [line for name, attack in result.attacks.items() if (line := epsilon_line(name, attack))]
    if not lines:
        return []
    return ["<h2>Empirical epsilon lower bound</h2>", "<ul>", *(f"<li>{escape(line)}</li>" for line in lines), "</ul>", f'<p class="note">{escape(DISCLAIMER)}</p>']


def _regression(result: AuditResult) -> list[str]:
    rows = regression_rows(result)
    if not rows:
        return []
    source = next(g.baseline["report"] for g in result.gates if g.baseline)
    return ["<h2>Since the baseline</h2>", f'<p class="note">baseline: {escape(source)}; {escape(REGRESSION_RULE)}</p>', _table(REGRESSION_HEADER, rows, verdict_column=7)]


def _inline(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figures(result: AuditResult, figures: Mapping[str, bytes] | None) -> list[str]:
    parts = ["<h2>ROC (log-log) and score histograms</h2>"]
    if figures is None:
        return [*parts, '<p class="note">figures not drawn (reports written without plots)</p>']
    parts.append('<div class="figures">')
    parts.append(f'<figure><img id="roc" class="plot" alt="ROC curves of every attack on log-log axes" src="{_inline(figures["roc"])}"></figure>')
    for name in result.attacks:
        alt = escape(f"{name} member and non-member score histograms")
        parts.append(f'<figure><img class="plot histogram" alt="{alt}" src="{_inline(figures[name])}"></figure>')
    return [*parts, "</div>"]


def _details(result: AuditResult) -> list[str]:
    rows = []
    for name, attack in result.attacks.items():
        leakage, metrics = attack.leakage, attack.leakage.metrics
        rows.append([
            name, f"{leakage.auc:.3f}", f"{leakage.leak_auc:.3f}", leakage.direction, f"{metrics['tpr_at_1pct_fpr'].value:.3f}",
            f"{metrics['asr'].value:.3f}", str(attack.queries_per_sample), ", ".join(f"{k}={v}" for k, v in attack.params.items() if k != "name"),
        ])  # fmt: skip
    header = ["attack", "AUC", "leak AUC", "direction", "TPR@1%FPR", "ASR (oracle)", "queries/sample", "parameters"]
    worst = ["metric", "attack", "value", "CI", "direction"]
    return ["<h2>Attacks</h2>", _table(header, rows), "<p>Worst case over attacks:</p>", _table(worst, worst_case_rows(result))]


def _checks(result: AuditResult) -> list[str]:
    lines = (result.checks.summary_lines() if result.checks is not None else ["no validity checks ran"]) + [f"warning: {w}" for w in result.warnings]
    return ["<h2>Validity checks</h2>", "<ul>", *(f"<li>{escape(line)}</li>" for line in lines), "</ul>"]


def _gallery(exposed: ExposedMembers | None) -> list[str]:
    if exposed is None:
        return []
    what = (
        f"The {len(exposed.members)} members that {exposed.attack} singles out best ({exposed.direction}); empirical FPR = "
        f"share of the {exposed.n_nonmembers} non-members scoring higher. These are the images to remove, deduplicate or re-weight."
    )
    cards = []
    for i, member in enumerate(exposed.members):
        image = f'<img alt="{escape(member.name)}" src="data:image/png;base64,{thumbnail(exposed.images[i])}">' if exposed.images is not None else ""
        caption = "<br>".join(escape(line) for line in (f"#{member.rank} {member.name}", f"score {member.score:.4g}", f"FPR {member.fpr:.2%}"))
        cards.append(f"<figure>{image}<figcaption>{caption}</figcaption></figure>")
    sources = ", ".join(sorted({member.source for member in exposed.members}))
    return [
        "<h2>Most-exposed members</h2>", f'<p class="note">{escape(what)}</p>', f'<div id="gallery" class="gallery">{"".join(cards)}</div>',
        f'<p class="note">member names are relative to {escape(sources)}</p>', _table(EXPOSED_HEADER, exposed.table_rows(), table_id="exposed"),
    ]  # fmt: skip


def _model(result: AuditResult) -> list[str]:
    lines = model_lines(result)
    return ["<h2>Model</h2>", *(f'<p class="model">{escape(line)}</p>' for line in lines)] if lines else []


def _environment(result: AuditResult) -> list[str]:
    rows = [[key, str(value)] for key, value in result.environment.items()]
    return ["<h2>Environment</h2>", _table(["", "value"], rows, table_id="environment", numeric=False)]


def to_html(result: AuditResult, *, figures: Mapping[str, bytes] | None = None) -> str:
    """Return the report as one HTML document with every image inlined.

    ``figures`` holds the PNG bytes of the ROC plot (key ``"roc"``) and of each attack's histogram
    (key: the attack's name), as :func:`naa_guard.reports.plots.write_plots` drew them; None leaves them out.
    """
    verdict = _verdict(result)
    counts = f"{result.n_members} members / {result.n_nonmembers} non-members" + (f" (limit {result.limit} per side)" if result.limit else "")
    body = [
        f'<h1>naa-guard: {escape(result.name)}</h1>',
        f'<p><span id="verdict" class="verdict {verdict.replace(" ", "-")}">{verdict}</span> {escape(counts)}; policy {escape(str(result.policy_path))}</p>',
        f'<p id="verdict-sentence">verdict: {escape(verdict_sentence(result))}</p>',
        *([f'<p id="conditioning">text conditioning: {escape(result.conditioning)}</p>'] if result.conditioning is not None else []),
        *_gates(result), *_privacy(result), *_regression(result), *(_figures(result, figures) if result.attacks else []),
        *_details(result), *_checks(result), *_gallery(result.exposed), *_model(result), *_environment(result),
    ]  # fmt: skip
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<link rel="icon" href="data:,"><title>naa-guard: {escape(result.name)} — {verdict}</title><style>{_STYLE}</style></head>\n'
        "<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write_html(result: AuditResult, path: Path, *, figures: Mapping[str, bytes] | None = None) -> Path:
    """Write ``report.html`` to ``path`` and return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_html(result, figures=figures), encoding="utf-8")
    return path
