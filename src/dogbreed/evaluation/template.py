"""The report's jinja2 template. A Python string, not a package data file: the images install the package with
``pip install --no-deps``, which copies modules and nothing else unless the build config lists data files."""

TEMPLATE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>dogbreed evaluation: {{ model.arch }} on {{ data.name }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1100px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.8em; }
table { border-collapse: collapse; margin: .5em 0; } td, th { padding: .25em .6em; border-bottom: 1px solid #eee; }
th { background: #f4f4f4; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.sortable th { cursor: pointer; user-select: none; } table.sortable th[aria-sort]::after { content: " \2195"; }
.figures img { max-width: 100%; } .big { font-size: 1.6em; font-weight: 600; }
.tiles { display: flex; flex-wrap: wrap; gap: .8em; }
.tile { width: 170px; font-size: .85em; } .tile img { display: block; max-width: 160px; max-height: 160px; }
.note { color: #555; font-size: .9em; } .placeholder { border: 2px dashed #bbb; padding: .8em; color: #777; }
</style></head>
<body>
<h1>dogbreed evaluation report</h1>
<p class="note">Model <b>{{ model.arch }}</b> ({{ model.classes }} breeds) from {{ model.source }}; data {{ data.path }}
({{ data.images }} photos{% if data.skipped %}, {{ data.skipped | length }} unreadable and left out{% endif %});
run through the serving predictor ({{ model.engine }}); written {{ generated }}.</p>

<section id="summary"><h2>Accuracy</h2>
<table><tr><th>top-1 accuracy</th><td class="num big" id="top1">{{ "%.4f" | format(summary.top1) }}</td></tr>
<tr><th>top-5 accuracy</th><td class="num big" id="top5">{{ "%.4f" | format(summary.top5) }}</td></tr>
<tr><th>photos</th><td class="num">{{ data.images }}</td></tr></table>
{% if data.skipped %}<details><summary>Unreadable photos ({{ data.skipped | length }})</summary><ul>
{% for item in data.skipped %}<li>{{ item.path }}: {{ item.reason }}</li>{% endfor %}</ul></details>{% endif %}
</section>

<section id="calibration"><h2>Calibration</h2>
<p>Temperature <b>T = {{ "%.4f" | format(calibration.temperature) }}</b>: {{ calibration.temperature_source }}.
Calibrated probabilities are softmax(logits / T); serving applies the T that model.json holds.</p>
<table id="calibration-table"><tr><th></th><th>ECE (15 bins)</th><th>NLL</th></tr>
<tr><th>before (T = 1)</th><td class="num">{{ "%.4f" | format(calibration.ece_before) }}</td>
<td class="num">{{ "%.4f" | format(calibration.nll_before) }}</td></tr>
<tr><th>after</th><td class="num">{{ "%.4f" | format(calibration.ece_after) }}</td>
<td class="num">{{ "%.4f" | format(calibration.nll_after) }}</td></tr></table>
<div class="figures"><img id="reliability-diagram" alt="reliability diagram"
 src="data:image/png;base64,{{ reliability_png }}"></div>
</section>

<section id="confusion"><h2>Confusions</h2>
<p>The full {{ model.classes }} &times; {{ model.classes }} matrix:
<a id="confusion-csv" href="{{ confusion_csv }}" download>{{ confusion_csv }}</a>

(rows: the true breed; columns: the answer).</p>
<h3>Most confused pairs</h3>
{% if pairs %}<table id="confused-pairs">
<tr><th>true breed</th><th>answered as</th><th>photos</th><th>share of the true breed</th></tr>
{% for p in pairs %}<tr><td>{{ p.true }}</td><td>{{ p.predicted }}</td><td class="num">{{ p.count }}</td>
<td class="num">{{ "%.1f" | format(100 * p.share) }} %</td></tr>
{% endfor %}</table>{% else %}<p>No confusions: every photo was answered with its own breed.</p>{% endif %}
<h3>Confusion heatmap of the most confused breeds</h3>
{% if heatmap_png %}<div class="figures"><img id="confusion-figure" alt="confusion heatmap of the most confused breeds"
 src="data:image/png;base64,{{ heatmap_png }}"></div>
{% else %}<p id="confusion-figure">No confusions to draw.</p>{% endif %}
</section>

<section id="worst-errors"><h2>Worst errors</h2>
<p class="note">The wrong answers given with the highest confidence (after calibration).</p>
<div class="tiles">{% for e in errors %}<div class="tile"><img alt="{{ e.name }}" src="data:image/jpeg;base64,{{ e.thumbnail }}">
<b>{{ e.predicted }}</b> {{ "%.1f" | format(100 * e.confidence) }} %<br>true: {{ e.true }}<br>
<span class="note">{{ e.name }}</span>
{% if e.explanation %}<img class="overlay" alt="why {{ e.predicted }}: {{ e.name }}"
 src="data:image/png;base64,{{ e.explanation }}"><br><span class="note">why {{ e.predicted }}</span>{% endif %}</div>
{% else %}<p>No errors.</p>{% endfor %}</div>
</section>

<section id="explanations"><h2>Explanations</h2>
<p class="note">Grad-CAM of the answered breed over the photo as the endpoint crops it (the same code as the
endpoint's <code>explain=true</code>): one photo of each of the most confused pairs; the worst errors carry theirs
above.</p>
<div class="tiles">{% for p in pairs if p.example %}<div class="tile"><img class="overlay"
 alt="why {{ p.predicted }}: {{ p.example.name }}" src="data:image/png;base64,{{ p.example.explanation }}">
<b>{{ p.true }}</b> answered as <b>{{ p.predicted }}</b><br><span class="note">{{ p.example.name }}</span></div>
{% else %}<p>No confusions to explain.</p>{% endfor %}</div>
</section>

<section id="not-a-dog"><h2>Not a dog</h2>
{% if dog %}<table id="not-a-dog-figures">
<tr><th>method</th><td>{{ dog.method }}</td></tr>
<tr><th>threshold</th><td class="num">{{ "none (a model saved before the check)" if dog.threshold is none
 else "%.3f" | format(dog.threshold) }}</td></tr>
<tr><th>photos of this split (all dogs) flagged as not a dog</th><td class="num">{{ "%.1f" | format(100 * dog.flagged) }} %
 of {{ dog.images }}</td></tr>
</table>
<p class="note">The dog score is the served model's own (one column of its head); the threshold was set at the end of
training to flag 2 % of the valid split's dogs. The endpoint's answers carry it as <code>dog</code>.</p>
{% else %}<p>No not-a-dog figures.</p>{% endif %}
</section>

<section id="per-breed"><h2>Per breed</h2>
<p class="note">Click a column's heading to sort by it.</p>
<table id="per-breed-table" class="sortable"><thead><tr>
<th data-type="text" aria-sort="none">breed</th><th data-type="num" aria-sort="none">precision</th>
<th data-type="num" aria-sort="none">recall</th><th data-type="num" aria-sort="none">F1</th>
<th data-type="num" aria-sort="none">support</th></tr></thead><tbody>
{% for r in per_breed %}<tr class="breed-row"><td>{{ r.breed }}</td>
<td class="num" data-value="{{ r.precision }}">{{ "%.3f" | format(r.precision) }}</td>
<td class="num" data-value="{{ r.recall }}">{{ "%.3f" | format(r.recall) }}</td>
<td class="num" data-value="{{ r.f1 }}">{{ "%.3f" | format(r.f1) }}</td>
<td class="num" data-value="{{ r.support }}">{{ r.support }}</td></tr>
{% endfor %}</tbody></table>
</section>

<section id="settings"><h2>Settings</h2>
<table id="settings-table">
{% for key, value in settings %}<tr><th>{{ key }}</th><td><code>{{ value }}</code></td></tr>{% endfor %}</table>
</section>

<script>
"use strict";
// Sort the per-breed table by the clicked column; a second click on it reverses the order.
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, column) {
    th.addEventListener("click", function () {
      var numeric = th.dataset.type === "num";
      var ascending = th.getAttribute("aria-sort") !== "ascending";
      table.querySelectorAll("th").forEach(function (other) { other.setAttribute("aria-sort", "none"); });
      th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[column], y = b.cells[column];
        var order = numeric ? parseFloat(x.dataset.value) - parseFloat(y.dataset.value)
                            : x.textContent.localeCompare(y.textContent);
        return ascending ? order : -order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
</script>
</body></html>
"""
