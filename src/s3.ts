/**
 * `storyloom/s3`: publishing to S3 (scene JSON, pictures and a story index under deterministic keys, written once)
 * and an S3 `ContentStore`. Needs the optional peer `@aws-sdk/client-s3`.
 *
 * @example
 * ```ts
 * import { createS3Publisher } from 'storyloom/s3';
 *
 * const publisher = createS3Publisher({ bucket: 'my-stories', prefix: 'site/', publicBaseUrl: 'https://cdn.example.com' });
 * ```
 *
 * @module storyloom/s3
 */

export * from './publishing/s3.js';
