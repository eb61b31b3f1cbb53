// Locates the Matrix spec data (../shared/matrix-spec beside the project, or MATRIX_SPEC_DIR).
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));

export function specDir(): string {
  const candidates = [process.env.MATRIX_SPEC_DIR, path.resolve(here, '../../shared/matrix-spec'), '/work/shared/matrix-spec'].filter(Boolean) as string[];
  const found = candidates.find((c) => existsSync(path.join(c, 'test-vectors.json')));
  if (!found) throw new Error(`Matrix spec data not found (tried ${candidates.join(', ')}); set MATRIX_SPEC_DIR`);
  return found;
}

export function testVectors(): any {
  return JSON.parse(readFileSync(path.join(specDir(), 'test-vectors.json'), 'utf8'));
}
