// Jest transformer for the few ESM-only packages we depend on: esbuild (already a dependency
// for Lambda bundling) rewrites them to CommonJS. `import.meta` has no CommonJS equivalent, so
// its two uses in those packages (`url`, `dirname`) are mapped onto __filename/__dirname, and
// dynamic import() becomes require() (jest's CommonJS runtime has no ESM loader).
const { transformSync } = require('esbuild');

module.exports = {
  process(source, filename) {
    const { code, map } = transformSync(source, {
      loader: 'js',
      format: 'cjs',
      target: 'node20',
      supported: { 'dynamic-import': false },
      sourcefile: filename,
      sourcemap: 'external',
      define: { 'import.meta.url': '__esmImportMetaUrl', 'import.meta.dirname': '__dirname' },
      banner: 'const __esmImportMetaUrl = require("node:url").pathToFileURL(__filename).href;',
    });
    // A function scope of its own: ESM code may declare `const __dirname`, which would clash
    // with the CommonJS wrapper's parameter of that name.
    return { code: `(function () {${code}\n})();`, map };
  },
};
