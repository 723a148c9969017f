// The same from an ES module: top-level await at init.
import { readFile } from 'node:fs/promises';

const TEXT = await readFile(new URL('./data.txt', import.meta.url), 'utf8');

export const handler = async () => ({ tla: TEXT });
