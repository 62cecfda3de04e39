import sys

if __name__ == "__main__":
    if sys.argv[1:2] in (["resume"], ["reproduce"]):
        from ctsim.resume import main as replay

        raise SystemExit(replay(sys.argv[1:]))
    from ctsim.cli import main

    main()
