#!/usr/bin/env node
// The package's install step: builds the native addon (native/build/Release/matpo_native.node) with
// node-gyp unless a build already exists that is newer than every source file in native/ and loads
// in this Node. A failed build only warns (the engine then runs on the TypeScript reference kernels).
//
// Why the check: `npx matpo` in a clone installs the clone into npm's npx cache the first time, which
// runs this step again; an unconditional `node-gyp rebuild` made that first command take ~9 s of
// compiling before printing anything. `npm run build:native` still rebuilds unconditionally.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const native = join(dirname(fileURLToPath(import.meta.url)), '..', 'native');
const addon = join(native, 'build', 'Release', 'matpo_native.node');

function upToDate() {
  if (!existsSync(addon)) return false;
  const built = statSync(addon).mtimeMs;
  const sources = readdirSync(native).filter((f) => /\.(cc|h)$/.test(f) || f === 'binding.gyp');
  if (sources.some((f) => statSync(join(native, f)).mtimeMs > built)) return false;
  try {
    createRequire(import.meta.url)(addon); // built for another Node ABI or machine: rebuild
    return true;
  } catch {
    return false;
  }
}

if (upToDate()) {
  console.log(`matpo: native addon up to date (${addon}); npm run build:native rebuilds it`);
  process.exit(0);
}
const r = spawnSync('node-gyp', ['rebuild', '--directory', native], { stdio: 'inherit', shell: process.platform === 'win32' });
if (r.status !== 0) {
  const why = r.error ? ` (${r.error.message}; npm puts node-gyp on PATH when it runs this script)` : '';
  console.warn(`matpo: native addon failed to build${why}; the engine will run on the TypeScript reference kernels`);
}
process.exit(0);
