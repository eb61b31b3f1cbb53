// Checks HTTP responses against the Matrix spec's own OpenAPI schemas (../shared/matrix-spec/api).
// Every YAML file of the spec data is registered with ajv under its file URL, so the relative
// `$ref`s between API files, definitions and event schemas resolve as they do in the spec.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import assert from 'node:assert/strict';
import { Ajv2020 } from 'ajv/dist/2020.js';
import type { ValidateFunction } from 'ajv';
import addFormatsModule from 'ajv-formats';
import YAML from 'yaml';
import { specDir } from './spec.js';

const addFormats = addFormatsModule as unknown as (ajv: Ajv2020) => Ajv2020;

let ajv: Ajv2020 | undefined;
const docs = new Map<string, Record<string, any>>();
const compiled = new Map<string, ValidateFunction>();

function walk(dir: string, out: string[]): string[] {
  for (const name of readdirSync(dir)) {
    const full = path.join(dir, name);
    if (statSync(full).isDirectory()) walk(full, out);
    else if (/\.(ya?ml|json)$/.test(name)) out.push(full);
  }
  return out;
}

function instance(): Ajv2020 {
  if (ajv) return ajv;
  const root = specDir();
  const a = new Ajv2020({ strict: false, allErrors: true, validateSchema: false });
  addFormats(a);
  const formats = YAML.parse(readFileSync(path.join(root, 'string-formats.yaml'), 'utf8')) as Record<string, { regex?: string }>;
  for (const [name, f] of Object.entries(formats)) {
    if (name === 'uri' || name === 'email') continue; // ajv-formats knows these
    a.addFormat(name, f?.regex ? new RegExp(f.regex) : true);
  }
  for (const sub of ['api', 'event-schemas/schema', 'schemas']) {
    for (const file of walk(path.join(root, sub), [])) {
      const text = readFileSync(file, 'utf8');
      const doc = file.endsWith('.json') ? JSON.parse(text) : YAML.parse(text);
      if (!doc || typeof doc !== 'object' || Array.isArray(doc)) continue;
      const id = pathToFileURL(file).href;
      doc.$id = id;
      docs.set(path.relative(path.join(root, 'api'), file).split(path.sep).join('/'), doc);
      a.addSchema(doc, id);
    }
  }
  ajv = a;
  return a;
}

/** JSON pointer segment, then URI-fragment encoded (path keys hold `{`, `}`). */
const seg = (s: string) => encodeURIComponent(s.replace(/~/g, '~0').replace(/\//g, '~1'));

/**
 * Asserts that `body` matches the spec's schema for a response.
 * @param apiFile e.g. 'client-server/message_pagination.yaml' (relative to the spec's api/ folder)
 * @param apiPath the path key as written in the spec, e.g. '/rooms/{roomId}/messages'
 */
export function assertMatchesSpec(apiFile: string, apiPath: string, method: string, status: number, body: unknown): void {
  const a = instance();
  const doc = docs.get(apiFile);
  if (!doc) throw new Error(`no spec file ${apiFile}`);
  const m = method.toLowerCase();
  const op = doc.paths?.[apiPath]?.[m];
  if (!op) throw new Error(`${apiFile} has no ${m.toUpperCase()} ${apiPath}`);
  const response = op.responses?.[String(status)];
  if (!response) throw new Error(`${apiFile} ${m.toUpperCase()} ${apiPath} documents no ${status} response`);
  if (!response.content?.['application/json']?.schema) throw new Error(`${apiFile} ${m.toUpperCase()} ${apiPath} ${status} has no JSON schema`);
  const ref = `${doc.$id}#/paths/${seg(apiPath)}/${m}/responses/${status}/content/${seg('application/json')}/schema`;
  let validate = compiled.get(ref);
  if (!validate) {
    validate = a.getSchema(ref);
    if (!validate) throw new Error(`could not compile ${ref}`);
    compiled.set(ref, validate);
  }
  if (!validate(body)) {
    assert.fail(`${m.toUpperCase()} ${apiPath} ${status} does not match ${apiFile}:\n${a.errorsText(validate.errors, { separator: '\n' })}\nbody: ${JSON.stringify(body).slice(0, 2000)}`);
  }
}
