/**
 * Commands with their own dependencies: `auth constant-contact`, `emulate`, `demo`.
 */
import { Command } from 'commander';
import type { CommandHelpers } from './cli';

interface GlobalOpts {
  config: string;
  json?: boolean;
}

export function register(program: Command, g: () => GlobalOpts, h: CommandHelpers): void {
  void program;
  void g;
  void h;
}
