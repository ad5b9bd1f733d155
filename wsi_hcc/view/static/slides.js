// The slide list: predictions.csv as a table, sortable by any column, each slide linked to its viewer.
"use strict";

async function main() {
  const data = await (await fetch("/api/slides")).json();
  document.title = document.getElementById("title").textContent = `wsi-hcc view: ${data.title}`;
  const columns = data.columns.concat(data.files ? ["files"] : []);
  const head = document.querySelector("#slides thead");
  const body = document.querySelector("#slides tbody");
  const headRow = head.insertRow();
  let sortColumn = null, ascending = true;
  for (const name of columns) {
    const th = document.createElement("th");
    th.textContent = name;
    th.addEventListener("click", () => {
      ascending = sortColumn === name ? !ascending : true;
      sortColumn = name;
      for (const other of headRow.cells) other.className = "";
      th.className = ascending ? "sorted-up" : "sorted-down";
      render(sorted(data.rows, name, ascending));
    });
    headRow.appendChild(th);
  }

  function render(rows) {
    body.replaceChildren();
    for (const row of rows) {
      const tr = body.insertRow();
      tr.dataset.slide = row.slide;
      for (const name of columns) {
        const td = tr.insertCell();
        if (name === "slide") {
          const problem = data.problems[row.slide];
          if (problem) { td.textContent = row.slide; td.className = "problem"; td.title = problem; }
          else { const a = document.createElement("a"); a.href = `/slide/${encodeURIComponent(row.slide)}`;
                 a.textContent = row.slide; td.appendChild(a); }
        } else if (name === "files") {
          for (const [suffix, label] of [[".heatmap.png", "heatmap"], [".geojson.gz", "GeoJSON"]]) {
            const a = document.createElement("a");
            a.href = `/files/${encodeURIComponent(row.slide + suffix)}`;
            a.textContent = label; td.append(a, " ");
          }
        } else {
          td.textContent = row[name] ?? "";
        }
      }
    }
  }
  render(data.rows);
}

function sorted(rows, column, ascending) {
  const numeric = rows.every(r => r[column] === "" || r[column] === undefined || isFinite(Number(r[column])));
  const key = r => numeric ? (r[column] === "" || r[column] === undefined ? -Infinity : Number(r[column]))
                           : String(r[column] ?? "");
  const out = rows.slice().sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
  return ascending ? out : out.reverse();
}

main();
