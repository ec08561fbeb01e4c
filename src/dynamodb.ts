/**
 * `storyloom/dynamodb`: the story state on Amazon DynamoDB, for the reference deployment. One table holds every
 * story (state, snapshots, scenes, influences and the publication log); each commit is one `TransactWriteItems`
 * conditioned on the story's version.
 *
 * Needs the optional packages `@aws-sdk/client-dynamodb` and `@aws-sdk/lib-dynamodb`:
 * `npm install @aws-sdk/client-dynamodb @aws-sdk/lib-dynamodb`. Without them, the first call of a store throws
 * `MissingDependencyError`.
 *
 * @example
 * ```ts
 * import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
 * import { createDynamoStateStore, createStoryTable } from 'storyloom/dynamodb';
 *
 * const client = new DynamoDBClient({ region: 'eu-west-1', maxAttempts: 1 });
 * await createStoryTable(client, 'stories');
 * const store = createDynamoStateStore({ tableName: 'stories', client });
 * ```
 *
 * @module storyloom/dynamodb
 */
export {
  type ContentStore,
  createMemoryContentStore,
  type MemoryContentStore,
} from './state/content-store.js';
export {
  type CreateStoryTableOptions,
  createDynamoStateStore,
  createStoryTable,
  DYNAMODB_STORE_LIMITS,
  type DynamoStateStore,
  type DynamoStateStoreOptions,
  storyTableDefinition,
} from './state/dynamodb.js';
