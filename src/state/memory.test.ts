import { describe, it } from 'vitest';
import { runStoryStateStoreSuite } from '../testing/state-store-suite.js';
import { createMemoryStateStore } from './memory.js';

runStoryStateStoreSuite({ describe, it }, { name: 'memory', create: () => createMemoryStateStore() });
