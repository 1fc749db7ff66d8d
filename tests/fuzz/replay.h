/*
 * replay.h: a main() for fuzz targets built without libFuzzer: runs the
 * target once on each file named on the command line and prints one line
 * per file, so `make check` replays the committed corpus.
 */
#include <stdio.h>
#include <stdlib.h>

int
main(int argc, char **argv)
{
	static unsigned char buf[1 << 20];
	int i;

	for (i = 1; i < argc; i++) {
		FILE *f = fopen(argv[i], "rb");
		size_t n;

		if (f == NULL) {
			printf("FAIL replay %s: cannot open\n", argv[i]);
			return 1;
		}
		n = fread(buf, 1, sizeof(buf), f);
		fclose(f);
		LLVMFuzzerTestOneInput(buf, n);
	}
	printf("replayed %d inputs\n", argc - 1);
	return 0;
}
