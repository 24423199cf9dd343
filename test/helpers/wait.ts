// Bounded waiting for tests: every wait has a limit and says what it was waiting for.
import type { EventEmitter } from 'node:events';

export function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export async function waitFor(pred: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await pred()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await delay(10);
  }
}

export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/** Resolves with the event's arguments; rejects on 'error' (unless waiting for it) or timeout. */
export function onceEvent<T extends unknown[] = unknown[]>(em: EventEmitter, event: string, timeoutMs: number): Promise<T> {
  return withTimeout(new Promise<T>((resolve, reject) => {
    const onEvent = (...args: unknown[]) => {
      em.off('error', onError);
      resolve(args as T);
    };
    const onError = (err: unknown) => {
      em.off(event, onEvent);
      reject(err);
    };
    em.once(event, onEvent);
    if (event !== 'error') em.once('error', onError);
  }), timeoutMs, `event "${event}"`);
}
