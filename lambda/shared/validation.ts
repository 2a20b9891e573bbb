import { en } from 'zod/locales';
import { config } from 'zod/mini';

/**
 * zod for the Lambdas: `zod/mini`, the same validation as `zod` through a functional API that
 * esbuild can tree-shake (`z.string().check(z.minLength(1))` for `z.string().min(1)`,
 * `z.optional(s)` for `s.optional()`), a small fraction of the bundle size. Unlike `zod`, it
 * has no default locale and would say only "Invalid input": English messages are loaded here,
 * so every schema of lambda/ imports this module (`import * as z from './validation'`), never
 * `zod/mini` directly. (lib/ is CDK code, not bundled, and keeps full `zod`.)
 *
 * Re-exported with `export *`, not as a namespace object, so that unused parts stay out.
 */
config(en());

export * from 'zod/mini';
