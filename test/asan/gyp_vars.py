#!/usr/bin/env python3
"""Prints binding.gyp's "capybara" target as make variables, so the sanitizer build (test/asan/addon.mk)
compiles exactly the sources, include dirs, defines and libraries the normal node-gyp build does, without
keeping a second list that could drift. Only the gyp features binding.gyp uses are understood: command
expansions <!(cmd) (output spliced into the string) and <!@(cmd) (output split into list items), run by
the shell in the directory of the .gyp file, as gyp does. Anything else is an error rather than a guess.

usage: gyp_vars.py BINDING_GYP > build-asan/gyp.mk
"""
import ast
import os
import subprocess
import sys


def run(cmd, cwd):
    out = subprocess.run(cmd, shell=True, cwd=cwd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return out.rstrip('\n')


def command_at(s, i):
    """(command, end) for the '<!(' or '<!@(' expansion starting at s[i]; parentheses nest."""
    open_at = s.index('(', i)
    depth = 0
    for j in range(open_at, len(s)):
        if s[j] == '(':
            depth += 1
        elif s[j] == ')':
            depth -= 1
            if depth == 0:
                return s[open_at + 1:j], j + 1
    sys.exit(f'gyp_vars: unbalanced expansion in {s!r}')


def expand(item, cwd):
    """One list item -> the list of items it stands for."""
    if item.startswith('<!@('):
        cmd, end = command_at(item, 0)
        if end != len(item):
            sys.exit(f'gyp_vars: <!@() must be the whole item: {item!r}')
        return run(cmd, cwd).split()
    out, i = '', 0
    while True:
        j = item.find('<!(', i)
        if j < 0:
            out += item[i:]
            break
        cmd, end = command_at(item, j)
        out += item[i:j] + run(cmd, cwd)
        i = end
    if '<(' in out or '<@(' in out or '>(' in out:
        sys.exit(f'gyp_vars: gyp variables are not supported here: {item!r}')
    return [out]


def main():
    gyp = os.path.abspath(sys.argv[1])
    cwd = os.path.dirname(gyp)
    with open(gyp) as f:
        spec = ast.literal_eval(f.read())  # gyp files are Python literals (comments allowed)
    target = next(t for t in spec['targets'] if t['target_name'] == 'capybara')
    for key in target:
        if key.startswith('conditions') or key.endswith(('!', '/', '=', '+', '?')):
            sys.exit(f'gyp_vars: unsupported gyp key {key!r}; extend test/asan/gyp_vars.py')

    def items(key):
        return [x for it in target.get(key, []) for x in expand(it, cwd)]

    def quote(x):
        return x.replace('$', '$$').replace(' ', '\\ ')

    variables = {
        'GYP_SOURCES': items('sources'),
        'GYP_INCLUDES': [os.path.join(cwd, d) if not os.path.isabs(d) else d for d in items('include_dirs')],
        'GYP_DEFINES': items('defines'),
        'GYP_CFLAGS': items('cflags'),
        'GYP_CFLAGS_C': items('cflags_c'),
        'GYP_CFLAGS_CC': items('cflags_cc'),
        'GYP_LIBS': items('libraries'),
    }
    print(f'# Generated from {gyp} by test/asan/gyp_vars.py; do not edit.')
    for name, vals in variables.items():
        print(f'{name} := ' + ' '.join(quote(v) for v in vals if v))


if __name__ == '__main__':
    main()
