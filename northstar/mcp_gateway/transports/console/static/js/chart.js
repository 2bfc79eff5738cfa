// A small inline SVG chart of a KPI's window: one bar per slice, the target as a line.
const NS = "http://www.w3.org/2000/svg";

function node(tag, attrs) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

export function sparkline(series, { target = null, width = 240, height = 48, label = "" } = {}) {
  const values = series.map((v) => (typeof v === "number" && Number.isFinite(v) ? v : null));
  const highest = Math.max(1e-9, ...values.filter((v) => v !== null));
  // A target far above every value would flatten the bars: scale to the values, pin the target on top.
  const top = (target !== null && target <= highest * 4 ? Math.max(highest, target) : highest) * 1.1;
  const svg = node("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img", class: "spark" });
  const title = node("title", {});
  title.textContent = label;
  svg.append(title);
  svg.append(node("rect", { x: 0, y: 0, width, height, class: "spark-bg" }));
  const slot = width / Math.max(1, values.length);
  values.forEach((v, i) => {
    if (v === null) {
      svg.append(node("rect", { x: i * slot + 1, y: height - 2, width: slot - 2, height: 2, class: "spark-empty" }));
      return;
    }
    const h = Math.max(1, (v / top) * (height - 4));
    svg.append(node("rect", { x: i * slot + 1, y: height - h, width: slot - 2, height: h, class: "spark-bar" }));
  });
  if (target !== null) {
    const y = Math.max(1, height - (target / top) * (height - 4));
    svg.append(node("line", { x1: 0, x2: width, y1: y, y2: y, class: target > top ? "spark-target off-scale" : "spark-target" }));
  }
  return svg;
}
