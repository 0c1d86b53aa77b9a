// After tsc: copies each app's static files (everything but the TypeScript, at any depth) and
// the vendored browser libraries into dist/, so that the server serves everything itself (no
// CDN; the apps work offline).
import { cpSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";

// `node build.mjs clean` (before tsc): nothing of an earlier build survives (a view removed
// from src/ must not stay servable from dist/).
if (process.argv[2] === "clean") {
  rmSync("dist", { recursive: true, force: true });
  process.exit(0);
}

const apps = ["coordinator", "portal", "shared"];
for (const app of apps) {
  cpSync(`src/${app}`, `dist/${app}`, {
    recursive: true,
    filter: (source) => !source.endsWith(".ts"),
  });
}
mkdirSync("dist/vendor", { recursive: true });
// The SMART JS client's browser bundle (the global FHIR).
cpSync("node_modules/fhirclient/build/fhir-client.min.js", "dist/vendor/fhir-client.js");
// Shoelace: its components (loaded on demand by the autoloader) and its light theme. Its
// browser build (`cdn/`, Lit bundled in), not `dist/`: that one is for bundlers and imports
// `lit` by bare name, which a browser cannot resolve — why the badges stayed unstyled.
cpSync("node_modules/@shoelace-style/shoelace/cdn", "dist/vendor/shoelace", { recursive: true });

// Each app's page names every module its main.js imports, at any depth, as a modulepreload:
// the browser fetches them side by side instead of one level of imports after another (three
// round trips to the server before the app could start its sign-in, ~140 ms of a launch).
function imports(file, seen = new Set()) {
  if (seen.has(file)) return seen;
  seen.add(file);
  const code = readFileSync(file, "utf8");
  for (const m of code.matchAll(/(?:^|\n)\s*(?:import|export)\s[^;]*?from\s*"(\.{1,2}\/[^"]+\.js)"/g)) {
    imports(join(dirname(file), m[1]), seen);
  }
  return seen;
}
for (const app of ["coordinator", "portal"]) {
  const page = `dist/${app}/index.html`;
  const main = `dist/${app}/main.js`;
  const links = [...imports(main)].filter((f) => f !== main)
    .map((f) => `  <link rel="modulepreload" href="${relative(`dist/${app}`, f)}">`).join("\n");
  const html = readFileSync(page, "utf8");
  const script = '  <script type="module" src="main.js"></script>';
  if (!html.includes(script)) throw new Error(`${page}: no main.js script to preload for`);
  writeFileSync(page, html.replace(script, `${links}\n${script}`));
}
