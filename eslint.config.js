// A small rule set: ESLint's and typescript-eslint's recommended rules (syntax-only, no type
// information, so the whole tree lints in seconds), plus the few habits the code keeps.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import globals from 'globals';

export default tseslint.config(
  { ignores: ['node_modules/', 'native/build/', 'src/ui/static/vendor/', 'test/fixtures/run/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  { files: ['src/ui/static/**/*.js'], languageOptions: { globals: { ...globals.browser, uPlot: 'readonly' } } },
  {
    languageOptions: { globals: { ...globals.node } },
    rules: {
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none', ignoreRestSiblings: true },
      ],
      '@typescript-eslint/no-non-null-assertion': 'off',
      '@typescript-eslint/no-explicit-any': 'error',
      eqeqeq: ['error', 'always', { null: 'ignore' }],
      'prefer-const': 'error',
      'no-var': 'error',
    },
  },
  // tests read JSON bodies and poke at internals
  { files: ['**/*.test.ts'], rules: { '@typescript-eslint/no-explicit-any': 'off' } },
);
