# List functions (lib/lists.nix).  Builtins are re-exported under the same
# names the real lib uses, so `lib.head`, `lib.filter` ... are the primops.
{ lib }:

let
  inherit (builtins) length elemAt genList foldl' filter head tail concatLists;
in
{
  inherit (builtins) head tail length elemAt filter map genList concatLists
    concatMap elem foldl' sort partition any all groupBy;

  singleton = x: [ x ];

  forEach = xs: f: map f xs;

  # Right fold without recursion depth problems for long lists.
  foldr = op: nul: list:
    let
      len = length list;
      go = n: if n == len then nul else op (elemAt list n) (go (n + 1));
    in
    go 0;
  fold = op: nul: list: lib.foldr op nul list;

  foldl = op: nul: list:
    let
      go = n: if n == -1 then nul else op (go (n - 1)) (elemAt list n);
    in
    go (length list - 1);

  imap0 = f: list: genList (n: f n (elemAt list n)) (length list);
  imap1 = f: list: genList (n: f (n + 1) (elemAt list n)) (length list);
  ifilter0 = ipred: input:
    map (idx: elemAt input idx)
      (filter (idx: ipred idx (elemAt input idx)) (genList (x: x) (length input)));

  flatten = x: if builtins.isList x then builtins.concatMap (y: lib.flatten y) x else [ x ];

  remove = e: filter (x: x != e);

  findSingle = pred: default: multiple: list:
    let found = filter pred list; n = length found; in
    if n == 0 then default else if n != 1 then multiple else head found;

  findFirstIndex = pred: default: list:
    let
      len = length list;
      go = n: if n == len then default else if pred (elemAt list n) then n else go (n + 1);
    in
    go 0;

  findFirst = pred: default: list:
    let i = lib.findFirstIndex pred null list; in
    if i == null then default else elemAt list i;

  count = pred: foldl' (c: x: if pred x then c + 1 else c) 0;

  optional = cond: elem: if cond then [ elem ] else [ ];
  optionals = cond: elems: if cond then elems else [ ];

  toList = x: if builtins.isList x then x else [ x ];

  range = first: last:
    if first > last then [ ] else genList (n: first + n) (last - first + 1);

  replicate = n: elem: genList (_: elem) n;

  zipListsWith = f: fst: snd:
    genList (n: f (elemAt fst n) (elemAt snd n))
      (lib.min (length fst) (length snd));
  zipLists = lib.zipListsWith (fst: snd: { inherit fst snd; });

  reverseList = xs: let l = length xs; in genList (n: elemAt xs (l - n - 1)) l;

  listDfs = stopOnCycles: before: list:
    let
      dfs' = us: visited: rest:
        let
          c = filter (x: before x us) visited;
          b = builtins.partition (x: before x us) rest;
        in
        if stopOnCycles && (length c > 0)
        then { cycle = us; loops = c; inherit visited rest; }
        else if length b.right == 0
        then { minimal = us; inherit visited rest; }
        else dfs' (head b.right) ([ us ] ++ visited) (tail b.right ++ b.wrong);
    in
    dfs' (head list) [ ] (tail list);

  toposort = before: list:
    let
      dfsthis = lib.listDfs true before list;
      toporest = lib.toposort before (dfsthis.visited ++ dfsthis.rest);
    in
    if length list < 2 then { result = list; }
    else if dfsthis ? cycle then { cycle = lib.reverseList ([ dfsthis.cycle ] ++ dfsthis.visited); inherit (dfsthis) loops; }
    else if toporest ? cycle then toporest
    else { result = [ dfsthis.minimal ] ++ toporest.result; };

  sortOn = f: list:
    map (x: x.v) (builtins.sort (a: b: a.k < b.k) (map (v: { k = f v; inherit v; }) list));

  compareLists = cmp: a: b:
    if a == [ ] then (if b == [ ] then 0 else -1)
    else if b == [ ] then 1
    else let rel = cmp (head a) (head b); in
      if rel == 0 then lib.compareLists cmp (tail a) (tail b) else rel;

  naturalSort = lst:
    let
      vectorise = s: map (x: if builtins.isList x then builtins.fromJSON (head x) else x) (builtins.split "(0|[1-9][0-9]*)" s);
      prepared = map (x: [ (vectorise x) x ]) lst;
      less = a: b: (lib.compareLists lib.compare (head a) (head b)) < 0;
    in
    map (x: elemAt x 1) (builtins.sort less prepared);

  take = count: lib.sublist 0 count;
  drop = count: list: lib.sublist count (length list) list;
  takeEnd = n: xs: lib.drop (lib.max 0 (length xs - n)) xs;
  dropEnd = n: xs: lib.take (lib.max 0 (length xs - n)) xs;

  sublist = start: count: list:
    let len = length list; in
    genList (n: elemAt list (n + start))
      (if start >= len then 0
       else if start + count > len then len - start
       else count);

  # The list version; the flat `lib.hasPrefix` is the string one (strings.nix
  # is merged after lists.nix in default.nix, as in the real lib).
  hasPrefix = list1: list2: lib.take (length list1) list2 == list1;
  removePrefix = list1: list2:
    if lib.lists.hasPrefix list1 list2 then lib.drop (length list1) list2
    else throw "lib.lists.removePrefix: First argument is not a list prefix of the second argument";

  last = list:
    assert lib.assertMsg (list != [ ]) "lists.last: list must not be empty!";
    elemAt list (length list - 1);

  init = list:
    assert lib.assertMsg (list != [ ]) "lists.init: list must not be empty!";
    lib.take (length list - 1) list;

  crossLists = f: foldl' (fs: args: concatLists (map (f: map f args) fs)) [ f ];

  # Real `unique` keeps the first occurrence; quadratic but order-preserving.
  unique = foldl' (acc: e: if builtins.elem e acc then acc else acc ++ [ e ]) [ ];
  uniqueStrings = list: builtins.attrNames (builtins.groupBy (x: x) list);

  allUnique = list: length (lib.unique list) == length list;

  intersectLists = e: filter (x: builtins.elem x e);
  subtractLists = e: filter (x: !(builtins.elem x e));
  mutuallyExclusive = a: b: length a == 0 || !(builtins.any (x: builtins.elem x a) b);
}
