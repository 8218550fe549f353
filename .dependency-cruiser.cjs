/**
 * The layer rule: every folder of src/ imports only folders below it (or itself). Lowest first:
 *
 *   core ← util ← engine ← model ← policy ← tinker ← tools ← agents ← rl ← envs ← train ← demo ← ui ← cli
 *
 * src/index.ts (the public API) may import any layer; src/testing/ (fakes and fixture generators)
 * may import any layer, and no production file may import it. Checked by `npm test`
 * (`npm run lint:layers`); src/layers.test.ts shows the rule failing on a planted upward import.
 */
const LAYERS = ['core', 'util', 'engine', 'model', 'policy', 'tinker', 'tools', 'agents', 'rl', 'envs', 'train', 'demo', 'ui', 'cli'];

const upward = LAYERS.map((layer, i) => ({
  name: `layer-${layer}`,
  comment: `src/${layer}/ may import only ${LAYERS.slice(0, i + 1).join(', ')}`,
  severity: 'error',
  from: { path: `^src/${layer}/` },
  to: { path: `^src/(${[...LAYERS.slice(i + 1), 'index\\.ts$'].join('|')})` },
}));

module.exports = {
  forbidden: [
    ...upward,
    {
      name: 'no-testing-in-production',
      comment: 'fakes and fixture generators live in src/testing/ and only tests, benchmarks and examples use them',
      severity: 'error',
      from: { path: '^src/', pathNot: ['\\.test\\.ts$', '^src/testing/'] },
      to: { path: '^src/testing/' },
    },
    {
      name: 'no-circular-core',
      comment: 'core/ imports nothing else of the project',
      severity: 'error',
      from: { path: '^src/core/' },
      to: { path: '^src/', pathNot: '^src/core/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: ['node_modules', '\\.test\\.ts$'] },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    moduleSystems: ['es6'],
  },
};
