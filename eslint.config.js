// ESLint for the whole repository (`npm run lint`, part of `npm test`): typescript-eslint's
// type-checked recommended rules on src/ and test/, the plain recommended ones on the JS scripts.

import js from '@eslint/js'
import { defineConfig } from 'eslint/config'
import globals from 'globals'
import tseslint from 'typescript-eslint'

export default defineConfig(
  { ignores: ['dist/', 'coverage/', '.tap/', 'bench/results/', 'data/'] },
  // An eslint-disable comment that silences nothing fails the run, so each one left means something.
  { linterOptions: { reportUnusedDisableDirectives: 'error' } },
  js.configs.recommended,
  {
    rules: {
      // Not in the recommended set; on because a `new` whose object is thrown away hides
      // a side effect (prom-client's metrics register themselves: src/metrics.ts says so).
      'no-new': 'error',
      // An empty catch is how cleanup here says "best effort" (killing a child that may
      // already be gone); an empty block anywhere else is still an error.
      'no-empty': ['error', { allowEmptyCatch: true }],
      // `_name` marks a parameter an interface makes us take; `...rest` drops a key by design.
      'no-unused-vars': ['error', { argsIgnorePattern: '^_', ignoreRestSiblings: true }],
    },
  },
  {
    files: ['**/*.ts'],
    extends: [tseslint.configs.recommendedTypeChecked],
    languageOptions: {
      parserOptions: { project: './tsconfig.eslint.json', tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      'no-unused-vars': 'off',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', ignoreRestSiblings: true }],
      // tap queues a subtest and waits for it before its parent ends, so `t.test(...)`
      // unawaited is tap's idiom, not a lost promise.
      '@typescript-eslint/no-floating-promises': ['error', {
        allowForKnownSafePromises: [{ from: 'package', name: 'PromiseWithSubtest', package: '@tapjs/core' }],
      }],
    },
  },
  {
    files: ['test/**/*.ts'],
    rules: {
      // Tests read the admin API's JSON as `any` (`res.json.services.users.live`) and the
      // tap assertion that follows is the check; typing each body would add casts, not
      // safety. These fired about 900 times in test/ and stay on for src/.
      '@typescript-eslint/no-explicit-any': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
      // An async callback is how a tap subtest ends when its body returns (a plain one must
      // call t.end()), so `async (t) => { t.equal(...) }` with no await is correct here.
      '@typescript-eslint/require-await': 'off',
    },
  },
  {
    files: ['bench/**/*.js', 'test/**/*.js', 'eslint.config.js'],
    languageOptions: { sourceType: 'module', globals: globals.node },
  },
  {
    // A classic script inlined into the page, so no module syntax and only the browser's globals.
    files: ['src/admin/ui/**/*.js'],
    languageOptions: { sourceType: 'script', globals: globals.browser },
  },
)
