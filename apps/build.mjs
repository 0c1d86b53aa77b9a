// After tsc: copies each app's static files and the vendored browser libraries into dist/,
// so that the server serves everything itself (no CDN; the apps work offline).
import { cpSync, mkdirSync, readdirSync } from "node:fs";

const apps = ["coordinator", "portal"];
for (const app of apps) {
  for (const file of readdirSync(`src/${app}`)) {
    if (!file.endsWith(".ts")) cpSync(`src/${app}/${file}`, `dist/${app}/${file}`);
  }
}
mkdirSync("dist/vendor", { recursive: true });
cpSync("src/shared/app.css", "dist/shared/app.css");
// The SMART JS client's browser bundle (the global FHIR).
cpSync("node_modules/fhirclient/build/fhir-client.min.js", "dist/vendor/fhir-client.js");
// Shoelace: its components (loaded on demand by the autoloader) and its light theme.
cpSync("node_modules/@shoelace-style/shoelace/dist", "dist/vendor/shoelace", { recursive: true });
