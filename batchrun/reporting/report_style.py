"""The report's stylesheet: a readable page on screen and when printed or forwarded as a file."""

STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:28px auto;padding:0 24px;
color:#222;max-width:1200px;line-height:1.4}
h1{font-size:26px;margin:0 0 2px}h2{font-size:18px;margin:26px 0 8px}
.muted{color:#666;font-size:13px;margin:4px 0}
code{font-size:13px}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:3px 16px;margin:12px 0 18px;
font-size:14px}
dl.facts dt{font-weight:600;color:#555}dl.facts dd{margin:0;overflow-wrap:anywhere}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:10px}
.card{border:1px solid #ddd;border-radius:8px;padding:8px 12px;font-size:13px;color:#555}
.card b{display:block;font-size:21px;color:#222}.card small{display:block;color:#777}
.pair{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:0 32px}
.charts{display:flex;flex-direction:column;gap:14px}
figure.chart{margin:0;border:1px solid #eee;border-radius:8px;padding:10px 10px 4px}
figcaption{font-weight:600;font-size:14px;margin-bottom:2px}
p.empty{color:#666;margin:6px 0 8px}
figure.chart svg{display:block;width:100%;height:auto}
table{border-collapse:collapse;font-size:13px;width:100%}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f6f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
"""
