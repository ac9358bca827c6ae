// Validate an AsyncAPI document with @asyncapi/parser, offline; print its diagnostics as JSON.
// usage: node asyncapi_validate.mjs DIR_WITH_NODE_MODULES DOCUMENT
// Relative $refs are read from disk beside the document; an http(s) reference is refused (and
// listed under "remote") instead of fetched, so the check never depends on the network.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';

const [modules, file] = process.argv.slice(2);
const { Parser } = createRequire(join(resolve(modules), 'package.json'))('@asyncapi/parser');
const remote = [];
const refuse = (schema) => ({
  schema,
  order: 1,
  read: (uri) => { remote.push(String(uri)); return '{}'; },
});
const parser = new Parser({
  __unstable: { resolver: { resolvers: [refuse('http'), refuse('https')] } },
});
const { diagnostics } = await parser.parse(readFileSync(file, 'utf8'), { source: resolve(file) });
const severities = ['error', 'warning', 'info', 'hint'];
const shown = diagnostics.map((d) => ({
  severity: severities[d.severity] ?? String(d.severity),
  code: d.code,
  message: d.message,
  path: d.path.join('/'),
}));
console.log(JSON.stringify({ diagnostics: shown, remote }, null, 1));
