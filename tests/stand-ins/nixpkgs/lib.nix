# Stand-in for the part of nixpkgs' `lib` mlws uses. Every function has the name and the semantics
# of the real one in nixpkgs/lib (lists.nix, attrsets.nix, strings.nix); nothing else is offered, so
# code using another lib function fails here with "attribute '...' missing" instead of passing.
let
  nameValuePair = name: value: { inherit name value; };

  hasSuffix =
    suffix: content:
    let
      lenContent = builtins.stringLength content;
      lenSuffix = builtins.stringLength suffix;
    in
    lenContent >= lenSuffix && builtins.substring (lenContent - lenSuffix) lenContent content == suffix;

  hasPrefix = prefix: content: builtins.substring 0 (builtins.stringLength prefix) content == prefix;

  removeSuffix =
    suffix: str:
    let
      sufLen = builtins.stringLength suffix;
      sLen = builtins.stringLength str;
    in
    if sufLen <= sLen && hasSuffix suffix str then builtins.substring 0 (sLen - sufLen) str else str;

  removePrefix =
    prefix: str:
    let
      preLen = builtins.stringLength prefix;
    in
    if hasPrefix prefix str then builtins.substring preLen (builtins.stringLength str - preLen) str else str;

  stringToCharacters = s: builtins.genList (i: builtins.substring i 1 s) (builtins.stringLength s);

  # Keeps the first occurrence of each element, like lib.lists.unique.
  unique = builtins.foldl' (acc: e: if builtins.elem e acc then acc else acc ++ [ e ]) [ ];
in
{
  inherit
    nameValuePair
    hasSuffix
    hasPrefix
    removeSuffix
    removePrefix
    unique
    stringToCharacters
    ;

  genAttrs = names: f: builtins.listToAttrs (map (n: nameValuePair n (f n)) names);

  mapAttrs = builtins.mapAttrs;

  mapAttrs' = f: set: builtins.listToAttrs (map (attr: f attr set.${attr}) (builtins.attrNames set));

  mapAttrsToList = f: attrs: map (name: f name attrs.${name}) (builtins.attrNames attrs);

  filterAttrs =
    pred: set:
    builtins.listToAttrs (
      builtins.concatMap (
        name:
        let
          v = set.${name};
        in
        if pred name v then [ (nameValuePair name v) ] else [ ]
      ) (builtins.attrNames set)
    );

  concatMapAttrs = f: v: builtins.foldl' (a: b: a // b) { } (builtins.attrValues (builtins.mapAttrs f v));

  concatMap = builtins.concatMap;

  subtractLists = e: builtins.filter (x: !(builtins.elem x e));

  optionalAttrs = cond: as: if cond then as else { };

  optional = cond: elem: if cond then [ elem ] else [ ];

  optionals = cond: elems: if cond then elems else [ ];

  concatStringsSep = builtins.concatStringsSep;

  toLower = builtins.replaceStrings (stringToCharacters "ABCDEFGHIJKLMNOPQRSTUVWXYZ") (
    stringToCharacters "abcdefghijklmnopqrstuvwxyz"
  );

  toList = x: if builtins.isList x then x else [ x ];
}
