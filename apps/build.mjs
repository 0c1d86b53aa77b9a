// After tsc: copies each app's static files (everything but the TypeScript, at any depth) and
// the vendored browser libraries into dist/, so that the server serves everything itself (no
// CDN; the apps work offline).
import { cpSync, mkdirSync, rmSync } from "node:fs";

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
