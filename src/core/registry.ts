import { MatpoError, UnknownNameError } from './errors.ts';

/** A registry of named entries (losses, estimators, rewards, …): duplicate names throw; unknown names list the valid ones. */
export class Registry<T> {
  private readonly entries = new Map<string, T>();
  constructor(readonly kind: string) {}
  register(name: string, entry: T): void {
    if (this.entries.has(name)) throw new MatpoError('duplicate-name', `${this.kind} "${name}" is already registered`);
    this.entries.set(name, entry);
  }
  get(name: string): T {
    const entry = this.entries.get(name);
    if (entry === undefined) throw new UnknownNameError({ kind: this.kind, name, available: this.names() });
    return entry;
  }
  has(name: string): boolean {
    return this.entries.has(name);
  }
  names(): string[] {
    return [...this.entries.keys()].sort();
  }
}
