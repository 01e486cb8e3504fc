// Reference run of Apache Flink SQL for the tumbling-window page-view count, so a test can
// compare kappa's output with Flink's TUMBLE on the same input. scripts/flink fetches the
// jars and compiles this file:
//
//   DIR="$(scripts/flink)"    # the jars; the class is in "$DIR/../classes"
//   java -cp "$DIR/*:$DIR/../classes" ClicksTumble INPUT.jsonl SECONDS
//
// (-XX:TieredStopAtLevel=1 -XX:+UseSerialGC before -cp roughly halve the CPU time of a short
// run.) INPUT holds one JSON object per line, e.g.
//   {"user_id":101,"page":"/products/1","timestamp":"2024-04-25 10:00:01"}
// Runs
//   SELECT window_start, window_end, page, COUNT(*) AS views
//   FROM TABLE(TUMBLE(TABLE clicks, DESCRIPTOR(ts), INTERVAL 'SECONDS' SECOND))
//   GROUP BY window_start, window_end, page
// in-process (local MiniCluster), batch mode, parallelism 1, and prints one line per row:
//   window_start TAB window_end TAB page TAB views
// the times as yyyy-MM-ddTHH:mm:ss, sorted by (window_start, page), pages in code point
// order (UTF-8 byte order), in UTF-8. A NULL page (the field is missing) prints as \N; a
// backslash, tab, newline or carriage return inside a page prints as \\, \t, \n, \r
// (PostgreSQL's text format). Nothing else goes to stdout; Flink logs errors
// only, to stderr (-Dorg.slf4j.simpleLogger.defaultLogLevel=info for more). Exits 0 on success,
// 1 on a failed job, 2 on bad arguments.
//
// How Flink's JSON format reads the lines (json.ignore-parse-errors = 'true'):
// - a line that is not a JSON object (not JSON, truncated, empty, an array) is skipped;
// - a field that is missing, JSON null, or cannot be converted to its column's type (a
//   timestamp not in "yyyy-MM-dd HH:mm:ss[.fff]", user_id "abc") becomes NULL: the row stays;
// - lenient coercions: "5" -> 5 and 1.5 -> 1 for user_id, 123 -> "123" for page; fractional
//   seconds are kept (TIMESTAMP(3)); text after the closing brace is ignored; of duplicate
//   keys the first wins.
import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.LocalDateTime;
import java.time.format.DateTimeFormatter;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.stream.Stream;

import org.apache.flink.configuration.Configuration;
import org.apache.flink.table.api.EnvironmentSettings;
import org.apache.flink.table.api.TableEnvironment;
import org.apache.flink.types.Row;
import org.apache.flink.util.CloseableIterator;

public final class ClicksTumble {
    static {
        // slf4j-simple logs to stderr; keep it to errors (set before any logger exists). The
        // benign warnings of a short local batch job would otherwise fill stderr.
        if (System.getProperty("org.slf4j.simpleLogger.defaultLogLevel") == null) {
            System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "error");
        }
    }

    private static final DateTimeFormatter ISO = DateTimeFormatter.ofPattern("yyyy-MM-dd'T'HH:mm:ss");

    private static final class Out {
        final LocalDateTime start;
        final LocalDateTime end;
        final String page;
        final long views;

        Out(LocalDateTime start, LocalDateTime end, String page, long views) {
            this.start = start;
            this.end = end;
            this.page = page;
            this.views = views;
        }
    }

    public static void main(String[] args) {
        if (args.length != 2) {
            usage("usage: ClicksTumble INPUT.jsonl SECONDS");
        }
        File input = new File(args[0]).getAbsoluteFile();
        long seconds = 0;
        try {
            seconds = Long.parseLong(args[1]);
        } catch (NumberFormatException e) {
            usage("ClicksTumble: SECONDS must be a whole number, not " + args[1]);
        }
        if (seconds <= 0) {
            usage("ClicksTumble: SECONDS must be positive");
        }
        if (!input.isFile()) {
            usage("ClicksTumble: no such file: " + input);
        }
        // The filesystem source silently skips files whose name starts with '.' or '_'
        // (hidden/in-progress files): refuse them rather than report no rows.
        if (input.getName().startsWith(".") || input.getName().startsWith("_")) {
            usage("ClicksTumble: Flink ignores files named .* or _*: rename " + input);
        }

        // Flink extracts jars (the planner, the RPC system) and keeps the MiniCluster's working
        // files under java.io.tmpdir, and leaves some behind (24 MB a run): give it a private
        // directory and remove it at the end.
        Path tmp;
        try {
            tmp = Files.createTempDirectory("clicks-tumble-");
        } catch (IOException e) {
            System.err.println("ClicksTumble: cannot create a temporary directory: " + e);
            System.exit(1);
            return;
        }
        System.setProperty("java.io.tmpdir", tmp.toString());

        int status = 0;
        try {
            List<Out> rows = run(input, seconds, tmp);
            StringBuilder sb = new StringBuilder();
            for (Out o : rows) {
                sb.append(ISO.format(o.start)).append('\t')
                        .append(ISO.format(o.end)).append('\t')
                        .append(escape(o.page)).append('\t')
                        .append(o.views).append('\n');
            }
            // UTF-8 whatever the locale: under LANG=C, System.out would print '?' for non-ASCII.
            System.out.write(sb.toString().getBytes(StandardCharsets.UTF_8));
            System.out.flush();
        } catch (Throwable t) {
            System.err.println("ClicksTumble: the Flink job failed:");
            t.printStackTrace();
            status = 1;
        }
        deleteTree(tmp);
        // The MiniCluster's non-daemon threads can keep the JVM alive after the job.
        System.exit(status);
    }

    private static List<Out> run(File input, long seconds, Path tmp) throws Exception {
        Configuration conf = new Configuration();
        conf.setString("parallelism.default", "1");
        conf.setString("table.exec.resource.default-parallelism", "1");
        conf.setString("execution.runtime-mode", "BATCH");
        conf.setString("io.tmp.dirs", tmp.toString());
        // The local MiniCluster still starts a REST endpoint and a blob server: loopback only.
        conf.setString("rest.bind-address", "127.0.0.1");
        conf.setString("rest.address", "127.0.0.1");
        conf.setString("jobmanager.bind-host", "127.0.0.1");
        conf.setString("taskmanager.bind-host", "127.0.0.1");
        conf.setString("web.upload.dir", tmp.resolve("web-upload").toString());
        EnvironmentSettings settings =
                EnvironmentSettings.newInstance().inBatchMode().withConfiguration(conf).build();
        TableEnvironment tEnv = TableEnvironment.create(settings);

        // The JSON field is named `timestamp` (a reserved word, hence the back quotes); the
        // view below exposes it as ts. 'json.timestamp-format.standard' = 'SQL' reads
        // "yyyy-MM-dd HH:mm:ss[.fff]"; 'json.ignore-parse-errors' = 'true' skips lines that are
        // not JSON (kappa dead-letters them) instead of failing the job.
        String path = input.toURI().toString();
        tEnv.executeSql(
                "CREATE TEMPORARY TABLE clicks_raw (\n"
                        + "  user_id BIGINT,\n"
                        + "  page STRING,\n"
                        + "  `timestamp` TIMESTAMP(3)\n"
                        + ") WITH (\n"
                        + "  'connector' = 'filesystem',\n"
                        + "  'path' = '" + path.replace("'", "''") + "',\n"
                        + "  'format' = 'json',\n"
                        + "  'json.timestamp-format.standard' = 'SQL',\n"
                        + "  'json.ignore-parse-errors' = 'true',\n"
                        + "  'json.fail-on-missing-field' = 'false'\n"
                        + ")");
        // WHERE ts IS NOT NULL: a missing, null or unparseable timestamp reaches Flink as a
        // NULL ts (the row is not skipped). Batch TUMBLE already drops such rows silently
        // (checked on Flink 2.3.0), but that is not documented; kappa dead-letters these
        // events, so they are filtered out explicitly here.
        tEnv.executeSql(
                "CREATE TEMPORARY VIEW clicks AS\n"
                        + "SELECT user_id, page, `timestamp` AS ts FROM clicks_raw\n"
                        + "WHERE `timestamp` IS NOT NULL");

        // The query, verbatim but for `views`: a reserved word in Flink SQL (SHOW VIEWS), so it
        // must be back-quoted.
        String sql = "SELECT window_start, window_end, page, COUNT(*) AS `views` "
                + "FROM TABLE(TUMBLE(TABLE clicks, DESCRIPTOR(ts), INTERVAL '" + seconds + "' SECOND)) "
                + "GROUP BY window_start, window_end, page";

        List<Out> rows = new ArrayList<>();
        try (CloseableIterator<Row> it = tEnv.executeSql(sql).collect()) {
            while (it.hasNext()) {
                Row r = it.next();
                rows.add(new Out(
                        (LocalDateTime) r.getField("window_start"),
                        (LocalDateTime) r.getField("window_end"),
                        (String) r.getField("page"),
                        ((Number) r.getField("views")).longValue()));
            }
        }
        rows.sort(Comparator.<Out, LocalDateTime>comparing(o -> o.start)
                .thenComparing(o -> o.page, Comparator.nullsFirst(ClicksTumble::compareCodePoints)));
        return rows;
    }

    // Unicode code point order, which is the byte order of UTF-8 (Rust's str order), unlike
    // String.compareTo's UTF-16 order for characters above U+FFFF.
    private static int compareCodePoints(String a, String b) {
        int i = 0;
        int j = 0;
        while (i < a.length() && j < b.length()) {
            int ca = a.codePointAt(i);
            int cb = b.codePointAt(j);
            if (ca != cb) {
                return Integer.compare(ca, cb);
            }
            i += Character.charCount(ca);
            j += Character.charCount(cb);
        }
        return Integer.compare(a.length() - i, b.length() - j);
    }

    private static String escape(String s) {
        if (s == null) {
            return "\\N";
        }
        StringBuilder b = new StringBuilder(s.length());
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '\\': b.append("\\\\"); break;
                case '\t': b.append("\\t"); break;
                case '\n': b.append("\\n"); break;
                case '\r': b.append("\\r"); break;
                default: b.append(c);
            }
        }
        return b.toString();
    }

    private static void deleteTree(Path root) {
        try (Stream<Path> walk = Files.walk(root)) {
            walk.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        } catch (IOException | RuntimeException e) {
            // Best effort: a leftover temporary directory is not worth failing the run.
        }
    }

    private static void usage(String message) {
        System.err.println(message);
        System.exit(2);
    }
}
